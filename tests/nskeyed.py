"""A small NSKeyedArchiver decoder for tests, over plistlib (XML or binary plists).

An archive is a plist `{"$archiver": "NSKeyedArchiver", "$top": {...}, "$objects": [...]}`:
every object lives once in `$objects` and is referenced by index (`CF$UID`, a `plistlib.UID` in
binary plists, a `{"CF$UID": n}` dict in XML ones); index 0 is the `"$null"` marker. An object
dict names its class through `$class`, a reference to `{"$classname", "$classes"}`.

Foundation classes become Python values (NSArray/NSSet -> list, NSDictionary -> dict,
NSString -> str, NSData -> bytes, NSUUID -> uuid.UUID, NSDate -> `NSDate`); numbers and booleans
are stored inline by the archiver. Any other class is kept as an `ArchivedObject`: a dict of its
decoded keys that remembers its class name and superclass chain.
"""

from __future__ import annotations

import plistlib
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

# NSDate counts seconds from 2001-01-01T00:00:00Z (the "reference date").
REFERENCE_DATE = datetime(2001, 1, 1, tzinfo=UTC)
REFERENCE_DATE_UNIX = 978307200

_ARRAYS = {"NSArray", "NSMutableArray", "NSSet", "NSMutableSet", "NSOrderedSet"}
_DICTS = {"NSDictionary", "NSMutableDictionary"}
_STRINGS = {"NSString", "NSMutableString"}
_DATA = {"NSData", "NSMutableData"}


class ArchiveError(ValueError):
    pass


@dataclass(frozen=True)
class NSDate:
    since_reference: float  # NS.time: seconds since 2001-01-01 UTC

    @property
    def unix(self) -> float:
        return self.since_reference + REFERENCE_DATE_UNIX

    def as_datetime(self) -> datetime:
        return REFERENCE_DATE + timedelta(seconds=self.since_reference)


class ArchivedObject(dict):
    """An instance of a class this decoder does not model: its decoded keys."""

    def __init__(self, classname: str, classes: list[str]):
        super().__init__()
        self.classname = classname
        self.classes = list(classes)

    def is_kind_of(self, name: str) -> bool:
        return name in self.classes

    def __repr__(self) -> str:
        return f"<{self.classname} {dict.__repr__(self)}>"


def _uid(value) -> int | None:
    if isinstance(value, plistlib.UID):
        return value.data
    if isinstance(value, dict) and len(value) == 1 and "CF$UID" in value:
        return value["CF$UID"]
    return None


class _Unarchiver:
    def __init__(self, objects: list):
        self.objects = objects
        self.memo: dict[int, object] = {}

    def value(self, raw):
        """A value as found inside an object: a reference, or an inline scalar."""
        uid = _uid(raw)
        if uid is not None:
            return self.object(uid)
        if isinstance(raw, list):
            return [self.value(item) for item in raw]
        return raw

    def object(self, uid: int):
        if uid in self.memo:
            return self.memo[uid]
        try:
            raw = self.objects[uid]
        except IndexError:
            raise ArchiveError(f"reference {uid} is outside $objects") from None
        if uid == 0 or raw == "$null":
            return None
        if not isinstance(raw, dict) or "$class" not in raw:
            self.memo[uid] = raw  # an inline string, number, boolean or data
            return raw
        info = self.objects[_uid(raw["$class"])]
        classname = info["$classname"]
        classes = info.get("$classes", [classname])
        kinds = set(classes)
        if kinds & _ARRAYS and "NS.objects" in raw:
            items: list = []
            self.memo[uid] = items  # placeholder first: archives may hold cycles
            items.extend(self.value(item) for item in raw["NS.objects"])
            return items
        if kinds & _DICTS and "NS.keys" in raw:
            mapping: dict = {}
            self.memo[uid] = mapping
            keys = [self.value(k) for k in raw["NS.keys"]]
            values = [self.value(v) for v in raw["NS.objects"]]
            mapping.update(zip(keys, values, strict=True))
            return mapping
        if "NSDate" in kinds:
            result = NSDate(float(raw["NS.time"]))
        elif kinds & _STRINGS:
            result = self.value(raw["NS.string"])
        elif kinds & _DATA:
            result = bytes(self.value(raw["NS.data"]))
        elif "NSUUID" in kinds:
            result = uuid.UUID(bytes=bytes(raw["NS.uuidbytes"]))
        else:
            instance = ArchivedObject(classname, classes)
            self.memo[uid] = instance
            for key, item in raw.items():
                if key != "$class":
                    instance[key] = self.value(item)
            return instance
        self.memo[uid] = result
        return result


def unarchive(data: bytes, key: str = "root"):
    """Decode an NSKeyedArchiver plist and return the object stored under `$top[key]`."""
    archive = plistlib.loads(data)
    if not isinstance(archive, dict) or archive.get("$archiver") != "NSKeyedArchiver":
        raise ArchiveError("not an NSKeyedArchiver archive")
    top = archive["$top"]
    if key not in top:
        raise ArchiveError(f"no {key!r} in $top (has {sorted(top)})")
    return _Unarchiver(archive["$objects"]).value(top[key])
