"""The command line (``drwatch ...``) and the local demo estate."""
