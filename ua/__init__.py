"""ua: a Python re-implementation of the DNAnexus Upload Agent, plus ua-server."""

__version__ = "0.1.0"
# The C++ Upload Agent version whose command line and stdout contract we keep.
UA_COMPAT_VERSION = "1.5.33"
