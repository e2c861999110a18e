"""Bundled model files (installed as the package ``fusecli.models``; see README, "The default model")."""
