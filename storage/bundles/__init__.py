"""Portable session files (``.arbor``): one session, the runs chosen from it and their traces.

Modules:

- ``format``: the file's layout (documented there), constants, the bundle version and the
  upgrades of older versions (``UPGRADES``), member checksums.
- ``reading``: reading a file and every check that needs only the file (zip, manifest,
  version, checksums), upgraded to the current version.
- ``export``: ``export_session`` (and ``export_session_bytes`` for a download): choosing the
  runs, refusing API key values, writing the zip atomically.
- ``importing``: ``import_bundle``, ``import_file`` (a plan file too) and ``import_upload``:
  checking the traces against this store and copying them in with the session in one
  transaction.
"""

from engine.errors import BundleError
from storage.bundles.export import (
    ExportReport,
    export_session,
    export_session_bytes,
    session_runs,
)
from storage.bundles.format import (
    BUNDLE_FORMAT,
    BUNDLE_SUFFIX,
    BUNDLE_VERSION,
    TRACE_MEMBERS,
    UPGRADES,
    bundle_file_name,
)
from storage.bundles.importing import ImportReport, import_bundle, import_file, import_upload

__all__ = [
    "BUNDLE_FORMAT",
    "BUNDLE_SUFFIX",
    "BUNDLE_VERSION",
    "TRACE_MEMBERS",
    "UPGRADES",
    "BundleError",
    "ExportReport",
    "ImportReport",
    "bundle_file_name",
    "export_session",
    "export_session_bytes",
    "import_bundle",
    "import_file",
    "import_upload",
    "session_runs",
]
