# The compiled modules first, while they match these sources (proxy/native.py).
from proxy import native as _native

__path__ = _native.package_path(__name__, __path__)
