from flint.cli import main

raise SystemExit(main())
