"""The three PATCH formats the Kubernetes API accepts for built-in objects.

* JSON merge patch (RFC 7386, ``application/merge-patch+json``): maps merge,
  ``null`` deletes a key, and a list replaces the whole list.
* Strategic merge patch (``application/strategic-merge-patch+json``): like a
  merge patch, except that lists of objects with a merge key (``name`` for
  containers, resourceClaims, claims, env and volumes) merge item by item.
  NOTE: the real merge keys come from the Go struct tags of each field. Here a
  list merges by key when its field name is in ``MERGE_KEYS``, which covers the
  fields of Deployments, Pods and Scale that the project patches. The
  ``$patch: delete`` and ``$patch: replace`` directives are supported, and
  ``$setElementOrder`` and ``$retainKeys`` directives are ignored.
* JSON patch (RFC 6902, ``application/json-patch+json``): a list of
  add/remove/replace/move/copy/test operations on JSON pointers.

Errors raise PatchError, which the server returns as 422 (or 400 for a body
of the wrong JSON type).
"""

from __future__ import annotations

import copy
from typing import Any

MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
PATCH_TYPES = (MERGE_PATCH, STRATEGIC_MERGE_PATCH, JSON_PATCH)

# Field name to the key that identifies list items in a strategic merge.
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "resourceClaims": "name",
    "claims": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "ports": "containerPort",
    "imagePullSecrets": "name",
    "conditions": "type",
    "ownerReferences": "uid",
}


class PatchError(ValueError):
    """A patch that cannot be applied; ``code`` is the HTTP status to return."""

    def __init__(self, message: str, code: int = 422) -> None:
        super().__init__(message)
        self.code = code


def apply_patch(target: dict[str, Any], patch: Any, *, content_type: str) -> dict[str, Any]:
    """Return a patched copy of ``target``; ``content_type`` picks the format."""
    media = content_type.split(";")[0].strip().lower()
    if media == JSON_PATCH:
        if not isinstance(patch, list):
            raise PatchError("a JSON patch must be a list of operations", code=400)
        return json_patch(target, patch)
    if not isinstance(patch, dict):
        raise PatchError(f"a {media} body must be a JSON object", code=400)
    if media == MERGE_PATCH:
        return merge_patch(target, patch)
    if media == STRATEGIC_MERGE_PATCH:
        return strategic_merge_patch(target, patch)
    raise PatchError(f"unsupported patch content type {content_type!r}; use one of {PATCH_TYPES}", code=415)


def merge_patch(target: Any, patch: Any) -> Any:
    """Apply an RFC 7386 merge patch and return the result (the inputs stay unchanged)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def strategic_merge_patch(target: Any, patch: Any, *, field_name: str = "") -> Any:
    """Apply a strategic merge patch (see the module docstring for the supported subset)."""
    if isinstance(patch, list):
        return _merge_list(target, patch, field_name=field_name)
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    directive = patch.get("$patch")
    if directive == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if directive == "delete":
        return None
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$setElementOrder/") or key in ("$retainKeys", "$patch"):
            continue
        if value is None:
            result.pop(key, None)
            continue
        merged = strategic_merge_patch(result.get(key), value, field_name=key)
        if merged is None:
            result.pop(key, None)
        else:
            result[key] = merged
    return result


def _merge_list(target: Any, patch: list[Any], *, field_name: str) -> list[Any]:
    key = MERGE_KEYS.get(field_name)
    current = copy.deepcopy(target) if isinstance(target, list) else []
    keyed = key is not None and all(isinstance(item, dict) for item in patch + current)
    if not keyed:
        return [copy.deepcopy(item) for item in patch if not (isinstance(item, dict) and item.get("$patch"))]
    for item in patch:
        if key not in item:
            raise PatchError(f"list {field_name!r} merges by {key!r}, but a patch item lacks it: {item}")
        position = next((i for i, old in enumerate(current) if old.get(key) == item[key]), None)
        if item.get("$patch") == "delete":
            if position is not None:
                del current[position]
            continue
        if position is None:
            current.append(strategic_merge_patch({}, item, field_name=field_name))
        else:
            current[position] = strategic_merge_patch(current[position], item, field_name=field_name)
    return current


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f"JSON pointer {path!r} must start with '/'")
    return [part.replace("~1", "/").replace("~0", "~") for part in path[1:].split("/")]


def _parent(document: Any, parts: list[str], *, path: str) -> Any:
    node = document
    for part in parts[:-1]:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise PatchError(f"JSON patch path {path!r} does not exist (missing {part!r})")
    return node


def _get(document: Any, path: str) -> Any:
    parts = _pointer(path)
    if not parts:
        return document
    parent = _parent(document, parts, path=path)
    last = parts[-1]
    if isinstance(parent, dict) and last in parent:
        return parent[last]
    if isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        return parent[int(last)]
    raise PatchError(f"JSON patch path {path!r} does not exist")


def _add(document: Any, path: str, *, value: Any) -> Any:
    parts = _pointer(path)
    if not parts:
        return copy.deepcopy(value)
    parent = _parent(document, parts, path=path)
    last = parts[-1]
    if isinstance(parent, dict):
        parent[last] = copy.deepcopy(value)
    elif isinstance(parent, list):
        if last == "-":
            index = len(parent)
        elif last.isdigit():
            index = int(last)
        else:
            index = -1
        if not 0 <= index <= len(parent):
            raise PatchError(f"JSON patch index {last!r} is out of range at {path!r}")
        parent.insert(index, copy.deepcopy(value))
    else:
        raise PatchError(f"JSON patch path {path!r} points into a scalar")
    return document


def _remove(document: Any, path: str) -> Any:
    parts = _pointer(path)
    if not parts:
        raise PatchError("a JSON patch cannot remove the whole document")
    parent = _parent(document, parts, path=path)
    last = parts[-1]
    if isinstance(parent, dict) and last in parent:
        del parent[last]
    elif isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        del parent[int(last)]
    else:
        raise PatchError(f"JSON patch cannot remove {path!r}: it does not exist")
    return document


def json_patch(target: dict[str, Any], operations: list[Any]) -> dict[str, Any]:
    """Apply RFC 6902 operations in order to a copy of ``target``; all or nothing."""
    document: Any = copy.deepcopy(target)
    for number, operation in enumerate(operations):
        if not isinstance(operation, dict) or "op" not in operation or "path" not in operation:
            raise PatchError(f"JSON patch operation {number} needs 'op' and 'path', got {operation!r}", code=400)
        op, path = operation["op"], str(operation["path"])
        if op in ("add", "replace", "test") and "value" not in operation:
            raise PatchError(f"JSON patch operation {number} ({op}) needs 'value'", code=400)
        if op == "add":
            document = _add(document, path, value=operation["value"])
        elif op == "remove":
            document = _remove(document, path)
        elif op == "replace":
            _get(document, path)
            document = _add(_remove(document, path), path, value=operation["value"]) if path else operation["value"]
        elif op in ("move", "copy"):
            source = str(operation.get("from", ""))
            value = copy.deepcopy(_get(document, source))
            if op == "move":
                document = _remove(document, source)
            document = _add(document, path, value=value)
        elif op == "test":
            if _get(document, path) != operation["value"]:
                raise PatchError(f"JSON patch test failed at {path!r}: value differs from {operation['value']!r}")
        else:
            raise PatchError(f"JSON patch operation {number} has unknown op {op!r}", code=400)
    if not isinstance(document, dict):
        raise PatchError("a JSON patch must leave an object")
    return document
