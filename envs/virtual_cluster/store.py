"""In-memory object storage with the API server's concurrency rules.

Every write gets a new ``metadata.resourceVersion`` from one counter. An update
that carries a resourceVersion other than the stored one fails with 409
Conflict, the optimistic concurrency every Kubernetes client relies on. An
update without one is unconditional, which the API server allows for
Deployments, Pods and the other types served here. Deployments also get
``metadata.generation``, bumped whenever ``spec`` changes.
"""

from __future__ import annotations

import copy
import datetime as dt
import threading
import uuid
from typing import Any, Callable, Iterator

from envs.virtual_cluster.errors import ApiError, already_exists, conflict, invalid, not_found
from envs.virtual_cluster.resources import ResourceType

Validator = Callable[..., None]


def now_rfc3339() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_label_selector(selector: str) -> list[tuple[str, str, tuple[str, ...]]]:
    """Parse ``a=b,c!=d,e in (x,y),f notin (z),g,!h`` into (key, operator, values) terms."""
    terms: list[tuple[str, str, tuple[str, ...]]] = []
    parts, depth, current = [], 0, ""
    for char in selector:
        depth += char == "("
        depth -= char == ")"
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    for raw in (p.strip() for p in parts):
        if not raw:
            continue
        for word in (" notin ", " in "):
            if word in raw:
                key, values = raw.split(word, 1)
                items = tuple(v.strip() for v in values.strip().strip("()").split(",") if v.strip())
                terms.append((key.strip(), word.strip(), items))
                break
        else:
            if "!=" in raw:
                key, value = raw.split("!=", 1)
                terms.append((key.strip(), "!=", (value.strip(),)))
            elif "=" in raw:
                key, value = raw.replace("==", "=").split("=", 1)
                terms.append((key.strip(), "=", (value.strip(),)))
            elif raw.startswith("!"):
                terms.append((raw[1:].strip(), "!exists", ()))
            else:
                terms.append((raw, "exists", ()))
    return terms


def matches_selector(labels: dict[str, str], terms: list[tuple[str, str, tuple[str, ...]]]) -> bool:
    for key, operator, values in terms:
        present = key in labels
        value = labels.get(key)
        if operator == "=" and value != values[0]:
            return False
        if operator == "!=" and value == values[0]:
            return False
        if operator == "in" and value not in values:
            return False
        if operator == "notin" and present and value in values:
            return False
        if operator == "exists" and not present:
            return False
        if operator == "!exists" and present:
            return False
    return True


def _field_value(obj: dict[str, Any], path: str) -> str:
    node: Any = obj
    for part in path.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return "" if node is None else str(node)


def matches_fields(obj: dict[str, Any], selector: str) -> bool:
    """Match a field selector such as ``spec.nodeName=node-0,status.phase!=Failed``."""
    for raw in (p.strip() for p in selector.split(",") if p.strip()):
        if "!=" in raw:
            path, value = raw.split("!=", 1)
            if _field_value(obj, path.strip()) == value.strip():
                return False
        else:
            path, value = raw.replace("==", "=").split("=", 1)
            if _field_value(obj, path.strip()) != value.strip():
                return False
    return True


class ObjectStore:
    """Objects keyed by (group, plural) then (namespace, name); all methods are thread-safe."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._objects: dict[tuple[str, str], dict[tuple[str, str], dict[str, Any]]] = {}
        self._version = 0
        self._validators: dict[tuple[str, str], list[Validator]] = {}

    @property
    def resource_version(self) -> str:
        return str(self._version)

    def add_validator(self, key: tuple[str, str], validator: Validator) -> None:
        """Run ``validator(rtype, new, old=old)`` before each create and update of that resource."""
        self._validators.setdefault(key, []).append(validator)

    def _next_version(self) -> str:
        self._version += 1
        return str(self._version)

    def _bucket(self, rtype: ResourceType) -> dict[tuple[str, str], dict[str, Any]]:
        return self._objects.setdefault(rtype.key, {})

    def _output(self, rtype: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
        result = copy.deepcopy(obj)
        result["apiVersion"] = rtype.group_version
        result["kind"] = rtype.kind
        return result

    def _validate(self, rtype: ResourceType, new: dict[str, Any], *, old: dict[str, Any] | None) -> None:
        name = str(new.get("metadata", {}).get("name", ""))
        if not name:
            raise invalid(rtype.kind, "", field_path="metadata.name", message="Required value: name is required",
                          group=rtype.group)
        for validator in self._validators.get(rtype.key, []):
            validator(rtype, new, old=old)

    def create(self, rtype: ResourceType, obj: dict[str, Any], *, namespace: str = "") -> dict[str, Any]:
        with self.lock:
            obj = copy.deepcopy(obj)
            meta = obj.setdefault("metadata", {})
            if rtype.namespaced:
                meta["namespace"] = meta.get("namespace") or namespace
            else:
                meta.pop("namespace", None)
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
            self._validate(rtype, obj, old=None)
            key = (meta.get("namespace", ""), meta["name"])
            if key in self._bucket(rtype):
                raise already_exists(rtype.plural, meta["name"], group=rtype.group)
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = now_rfc3339()
            meta["resourceVersion"] = self._next_version()
            if rtype.kind == "Deployment":
                meta["generation"] = 1
            self._bucket(rtype)[key] = obj
            return self._output(rtype, obj)

    def get(self, rtype: ResourceType, name: str, *, namespace: str = "") -> dict[str, Any]:
        with self.lock:
            obj = self._bucket(rtype).get((namespace if rtype.namespaced else "", name))
            if obj is None:
                raise not_found(rtype.plural, name, group=rtype.group)
            return self._output(rtype, obj)

    def list(
        self, rtype: ResourceType, namespace: str = "", *, label_selector: str = "", field_selector: str = ""
    ) -> list[dict[str, Any]]:
        """Return matching objects sorted by namespace and name; namespace "" lists all."""
        terms = parse_label_selector(label_selector)
        with self.lock:
            result = []
            for (ns, _), obj in sorted(self._bucket(rtype).items()):
                if namespace and rtype.namespaced and ns != namespace:
                    continue
                if not matches_selector(obj.get("metadata", {}).get("labels") or {}, terms):
                    continue
                if field_selector and not matches_fields(obj, field_selector):
                    continue
                result.append(self._output(rtype, obj))
            return result

    def replace(self, rtype: ResourceType, obj: dict[str, Any], *, namespace: str = "", name: str = "") -> dict[str, Any]:
        """Store ``obj`` in place of the current object, checking its resourceVersion if it has one.

        ``name`` is the name from the request URL; empty means the body's ``metadata.name``.
        """
        name = name or str(obj.get("metadata", {}).get("name", ""))
        with self.lock:
            key = (namespace if rtype.namespaced else "", name)
            old = self._bucket(rtype).get(key)
            if old is None:
                raise not_found(rtype.plural, name, group=rtype.group)
            obj = copy.deepcopy(obj)
            meta = obj.setdefault("metadata", {})
            given = meta.get("resourceVersion")
            if given and given != old["metadata"]["resourceVersion"]:
                raise conflict(rtype.plural, name, group=rtype.group)
            if meta.get("name", name) != name:
                raise ApiError(400, f"the name in the body ({meta.get('name')!r}) does not match the URL ({name!r})")
            meta["name"] = name
            for kept in ("uid", "creationTimestamp", "namespace", "generation"):
                if kept in old["metadata"]:
                    meta[kept] = old["metadata"][kept]
            self._validate(rtype, obj, old=old)
            if rtype.kind == "Deployment" and obj.get("spec") != old.get("spec"):
                meta["generation"] = int(old["metadata"].get("generation", 1)) + 1
            meta["resourceVersion"] = self._next_version()
            self._bucket(rtype)[key] = obj
            return self._output(rtype, obj)

    def delete(self, rtype: ResourceType, name: str, *, namespace: str = "") -> dict[str, Any]:
        with self.lock:
            key = (namespace if rtype.namespaced else "", name)
            obj = self._bucket(rtype).pop(key, None)
            if obj is None:
                raise not_found(rtype.plural, name, group=rtype.group)
            self._next_version()
            return self._output(rtype, obj)

    def items(self, rtype: ResourceType) -> Iterator[dict[str, Any]]:
        """Yield the stored objects themselves, for the simulation driver, which must hold ``lock``."""
        yield from list(self._bucket(rtype).values())

    def touch(self, obj: dict[str, Any]) -> None:
        """Give a stored object that the driver changed in place a new resourceVersion."""
        obj["metadata"]["resourceVersion"] = self._next_version()
