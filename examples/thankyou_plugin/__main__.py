"""Runs the plugin's web server:

    FLINT_CLIENT_ID=ca_… FLINT_CLIENT_SECRET=fcs_… FLINT_APP_ID=app_… \\
    FLINT_PARTNER_KEY=pak_… PLUGIN_SUPPORT_TOKEN=… python -m thankyou_plugin --port 3000

(`flint dev` does all of this for you.)"""

from __future__ import annotations

import argparse
import logging

import uvicorn

from .plugin import Settings, ThankYouPlugin
from .web import create_app


def main() -> None:
    parser = argparse.ArgumentParser(prog="thankyou_plugin", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per event is enough
    plugin = ThankYouPlugin(Settings.from_env(args.port))
    uvicorn.run(create_app(plugin), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
