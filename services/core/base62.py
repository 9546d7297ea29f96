"""BASE62: the alphabet of API keys' random part and of row ids (digits, A-Z, a-z).

Below both auth/ (API keys) and store/ (row ids), so neither imports the other for it.
"""

from __future__ import annotations

import string

BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase
