"""Deprecated: use the `gpusleep` package beside this file (docs/python.md). This module keeps
old imports working: connect() is gpusleep.attach(), ConnectionFailed is
gpusleep.ConnectionFailedError, and the rest is the package's."""
import warnings

from gpusleep import *  # noqa: F401,F403
from gpusleep import ConnectionFailedError as ConnectionFailed  # noqa: F401
from gpusleep import attach as connect  # noqa: F401

warnings.warn("gpusleep_client is deprecated: import gpusleep", DeprecationWarning, stacklevel=2)
