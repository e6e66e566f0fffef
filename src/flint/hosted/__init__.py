"""The hosted web app: HTML pages for merchants (sign-in, OAuth consent) and
buyers (checkout, payment link, invoice payment), and the OAuth 2.0 endpoints,
served behind Envoy and calling the core over gRPC."""

from flint.hosted.app import create_app, run
from flint.hosted.settings import HostedSettings

__all__ = ["HostedSettings", "create_app", "run"]
