"""Reading an ``.arbor`` file (or a version 1 JSON session file): every check that needs only
the file (that it is a zip and an Arbor bundle, its version, the manifest, each member's
checksum), then the upgrades up to ``BUNDLE_VERSION``; see ``read_file``."""

from __future__ import annotations

import hashlib
import json
import zipfile
import zlib
from pathlib import Path
from typing import Any

from engine.errors import BundleError
from storage.bundles import format as limits
from storage.bundles.format import (
    BUNDLE_FORMAT,
    BUNDLE_VERSION,
    COPY_CHUNK,
    MANIFEST_MEMBER,
    MODELS_MEMBER,
    SESSION_MEMBER,
    TRACE_MEMBERS,
    TRACE_TABLES,
    UPGRADES,
    Contents,
)
from storage.sessions import SESSION_FORMAT, SESSION_FORMAT_VERSION

#: Members inside zips that say what kind of file a foreign zip is.
_FOREIGN_SIGNS = (
    ("[Content_Types].xml", "an Office document (.docx, .xlsx or .pptx)"),
    ("META-INF/MANIFEST.MF", "a Java archive"),
    ("mimetype", "an OpenDocument or EPUB file"),
)


def _not_a_session_file(source: str, detail: str) -> BundleError:
    return BundleError(f"{source} is not an Arbor session file (not a zip archive): {detail}.")


def read_file(path: Path, folder: Path) -> Contents:
    """Every check that needs only the file; Parquet members are extracted into ``folder``."""
    if not path.is_file():
        raise BundleError(f"{path} does not exist or is not a file.")
    with path.open("rb") as handle:
        head = handle.read(4)
    contents = _read_zip(path, folder) if head.startswith(b"PK") else _read_json(path)
    while contents.version < BUNDLE_VERSION:
        upgrade = UPGRADES.get(contents.version)
        if upgrade is None:  # pragma: no cover - a gap in UPGRADES is a programming error
            raise BundleError(f"{contents.source}: no upgrade from version {contents.version}.")
        contents = upgrade(contents)
    return contents


def _read_json(path: Path) -> Contents:
    source = path.name
    try:
        text = path.read_text(encoding="utf-8")
        payload = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise _not_a_session_file(source, "it is not a JSON session file either") from None
    if not isinstance(payload, dict):
        raise _not_a_session_file(source, "it is JSON, but not an object")
    fmt = payload.get("format")
    if fmt != SESSION_FORMAT:
        looks = f"a JSON file of format {fmt!r}" if fmt else "a JSON file without a format"
        if fmt == "arbor-plan" or (fmt is None and "root" in payload):
            looks = "an Arbor plan file: import it as a plan"
        raise _not_a_session_file(source, f"it is {looks}")
    version = payload.get("version")
    if not isinstance(version, int) or version > SESSION_FORMAT_VERSION:
        raise BundleError(
            f"{source} has session file version {version!r}; this Arbor reads session files up "
            f"to version {SESSION_FORMAT_VERSION} and bundles up to {BUNDLE_VERSION}. Update "
            "Arbor to import it."
        )
    return Contents(source=source, version=1, kind="session file v1", session_text=text)


def _describe_zip(names: list[str]) -> str:
    for sign, what in _FOREIGN_SIGNS:
        if sign in names:
            return f"it looks like {what}"
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    return f"it holds {shown}" if names else "it is empty"


def _check_sizes(archive: zipfile.ZipFile, source: str) -> None:
    """Refuse a zip bomb before extracting anything: too many members, a member or the whole
    too large once uncompressed, or a member that compresses suspiciously well."""
    infos = [info for info in archive.infolist() if not info.is_dir()]
    if len(infos) > limits.MAX_MEMBERS:
        raise BundleError(
            f"{source} is refused: it has {len(infos)} members; an Arbor session file has at "
            f"most {limits.MAX_MEMBERS}."
        )
    total = 0
    for info in infos:
        total += info.file_size
        if info.file_size > limits.MAX_MEMBER_BYTES:
            raise BundleError(
                f"{source} is refused: member {info.filename} would expand to "
                f"{_mb(info.file_size)} (the limit is {_mb(limits.MAX_MEMBER_BYTES)})."
            )
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > limits.RATIO_FLOOR_BYTES and ratio > limits.MAX_COMPRESSION_RATIO:
            raise BundleError(
                f"{source} is refused: member {info.filename} expands {ratio:.0f} times "
                f"({_mb(info.compress_size)} to {_mb(info.file_size)}); that is a zip bomb, not "
                "an export."
            )
    if total > limits.MAX_TOTAL_BYTES:
        raise BundleError(
            f"{source} is refused: its members would expand to {_mb(total)} (the limit is "
            f"{_mb(limits.MAX_TOTAL_BYTES)})."
        )


def _mb(size: int) -> str:
    return f"{size / (1 << 20):,.1f} MB"


def _extract(archive: zipfile.ZipFile, name: str, target: Path, source: str) -> str:
    """Copy member ``name`` to ``target``; its sha256. A damaged member, or one that yields more
    bytes than it declares, raises ``BundleError``."""
    digest = hashlib.sha256()
    declared = archive.getinfo(name).file_size
    written = 0
    try:
        with archive.open(name) as member, target.open("wb") as out:
            while chunk := member.read(COPY_CHUNK):
                written += len(chunk)
                if written > declared:
                    raise BundleError(
                        f"{source} is corrupt: member {name} is longer than the {declared} "
                        "bytes it declares; extraction stopped."
                    )
                digest.update(chunk)
                out.write(chunk)
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, NotImplementedError) as exc:
        raise BundleError(
            f"{source} is corrupt: member {name} cannot be read ({exc}). Export it again."
        ) from None
    except OSError as exc:
        raise BundleError(f"{source}: member {name} cannot be extracted ({exc}).") from None
    return digest.hexdigest()


def _read_zip(path: Path, folder: Path) -> Contents:
    source = path.name
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError, EOFError) as exc:
        raise _not_a_session_file(
            source, f"it starts like one, but is damaged or truncated ({exc})"
        ) from None
    with archive:
        _check_sizes(archive, source)
        names = [name for name in archive.namelist() if not name.endswith("/")]
        if MANIFEST_MEMBER in names and (
            archive.getinfo(MANIFEST_MEMBER).file_size > limits.MAX_MANIFEST_BYTES
        ):
            raise BundleError(f"{source} is refused: its {MANIFEST_MEMBER} is too large.")
        if MANIFEST_MEMBER not in names:
            raise BundleError(
                f"{source} is a zip archive but not an Arbor session file: it has no "
                f"{MANIFEST_MEMBER}; {_describe_zip(names)}."
            )
        manifest_file = folder / MANIFEST_MEMBER
        _extract(archive, MANIFEST_MEMBER, manifest_file, source)
        try:
            manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise BundleError(
                f"{source} is corrupt: member {MANIFEST_MEMBER} is not JSON ({exc})."
            ) from None
        fmt = manifest.get("format") if isinstance(manifest, dict) else None
        if fmt != BUNDLE_FORMAT:
            raise BundleError(
                f"{source} is a zip archive but not an Arbor session file: its "
                f"{MANIFEST_MEMBER} has format {fmt!r}, not {BUNDLE_FORMAT!r}; "
                f"{_describe_zip(names)}."
            )
        version = manifest.get("version")
        if not isinstance(version, int) or version < 2:
            raise BundleError(
                f"{source} is corrupt: member {MANIFEST_MEMBER} has version {version!r} (an "
                f"Arbor bundle zip has version 2 or later)."
            )
        if version > BUNDLE_VERSION:
            raise BundleError(
                f"{source} is a version {version} Arbor session file; this Arbor reads up to "
                f"version {BUNDLE_VERSION}. Update Arbor to import it."
            )
        members = manifest.get("members")
        run_ids = manifest.get("run_ids")
        schema = manifest.get("trace_schema_version")
        if (
            not isinstance(members, dict)
            or not all(isinstance(v, str) for v in members.values())
            or not isinstance(run_ids, list)
            or not all(isinstance(r, str) for r in run_ids)
            or not isinstance(schema, int)
        ):
            raise BundleError(
                f"{source} is corrupt: member {MANIFEST_MEMBER} lacks its members, run_ids or "
                "trace_schema_version."
            )
        required = [SESSION_MEMBER, *(TRACE_MEMBERS[t] for t in TRACE_TABLES if run_ids)]
        for name in required:
            if name not in members:
                raise BundleError(
                    f"{source} is corrupt: member {name} is missing from the manifest."
                )
        contents = Contents(
            source=source,
            version=version,
            kind=f"bundle v{version}",
            session_text="",
            run_ids=list(dict.fromkeys(run_ids)),
            trace_schema_version=schema,
        )
        by_member = {member: table for table, member in TRACE_MEMBERS.items()}
        for index, (name, expected) in enumerate(sorted(members.items())):
            if name not in names:
                raise BundleError(
                    f"{source} is corrupt: member {name} is listed in the manifest but missing "
                    "from the file."
                )
            target = folder / f"member-{index}"
            actual = _extract(archive, name, target, source)
            if actual != expected.lower():
                raise BundleError(
                    f"{source} is corrupt: member {name} does not match its checksum (sha256 "
                    f"{actual[:12]}..., the manifest says {expected[:12]}...). Export it again."
                )
            if name in by_member:
                contents.trace_files[by_member[name]] = target
            elif name == SESSION_MEMBER:
                contents.session_text = target.read_text(encoding="utf-8", errors="replace")
            elif name == MODELS_MEMBER:
                contents.models = _read_models(target, source, contents.warnings)
            else:
                contents.warnings.append(f"{name} in the file is not read by this Arbor.")
        unlisted = sorted(set(names) - set(members) - {MANIFEST_MEMBER})
        if unlisted:
            contents.warnings.append(f"ignored {', '.join(unlisted)}: not listed in the manifest.")
    return contents


def _read_models(file: Path, source: str, warnings: list[str]) -> list[dict[str, Any]]:
    try:
        payload = json.loads(file.read_text(encoding="utf-8"))
        models = payload["models"]
        if not isinstance(models, list) or not all(isinstance(m, dict) for m in models):
            raise TypeError("models is not a list of objects")
    except (ValueError, KeyError, TypeError) as exc:
        warnings.append(f"{MODELS_MEMBER} in {source} is unreadable and was ignored ({exc}).")
        return []
    return models


__all__ = ["read_file"]
