from flint.hosted.app import main

raise SystemExit(main())
