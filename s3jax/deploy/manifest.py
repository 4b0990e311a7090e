"""An export's manifest.json: its format and version, and a SHA-256 of every file it lists, checked before
anything is read."""
import hashlib
import json
import os

from s3jax.errors import ConfigError

FORMAT = "s3jax-export"
VERSION = 1
MANIFEST = "manifest.json"


class ExportError(ConfigError):
  """An export that cannot be read as written; the message names the file and what to do."""


def sha256(path: str) -> str:
  with open(path, "rb") as f:
    return hashlib.file_digest(f, "sha256").hexdigest()


def write_manifest(output: str, manifest: dict):
  tmp = os.path.join(output, MANIFEST + ".tmp")
  with open(tmp, "w") as f:
    json.dump(manifest, f, indent=1)
  os.replace(tmp, os.path.join(output, MANIFEST))


def file_entry(directory: str, name: str, **info) -> dict:
  """A manifest entry for the export's file `name`: its size and checksum, and `info`."""
  path = os.path.join(directory, name)
  return {"file": name, "bytes": os.path.getsize(path), "sha256": sha256(path), **info}


def add_file(directory: str, key: str, name: str, **info) -> dict:
  """Records one more file of the export (e.g. the StableHLO artifact) in its manifest, with a checksum."""
  manifest = read_manifest(directory)
  manifest[key] = file_entry(directory, name, **info)
  write_manifest(directory, manifest)
  return manifest


def read_manifest(directory: str) -> dict:
  path = os.path.join(directory, MANIFEST)
  if not os.path.isfile(path):
    raise ExportError(f"{path} not found: --export must be a directory written by export.py.")
  try:
    with open(path) as f:
      manifest = json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as err:
    raise ExportError(f"{path} is not valid JSON ({err.msg if hasattr(err, 'msg') else err}): the file "
                      "was truncated or edited; export the model again.") from None
  if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
    raise ExportError(f"{path} is not an s3jax export manifest (no format '{FORMAT}').")
  if manifest.get("version") != VERSION:
    raise ExportError(f"{path} has format version {manifest.get('version')!r}; this s3jax reads version "
                      f"{VERSION}. Export again with this version, or use the s3jax that wrote it.")
  return manifest


def verified_path(directory: str, entry: dict) -> str:
  """The file of a manifest entry, after checking it exists and matches its checksum."""
  name = entry.get("file", "?")
  path = os.path.join(directory, name)
  if not os.path.isfile(path):
    raise ExportError(f"{path} is missing; the export is incomplete, export the model again.")
  if sha256(path) != entry.get("sha256"):
    raise ExportError(f"{path} does not match the checksum in {MANIFEST} (truncated or edited); export "
                      "the model again.")
  return path
