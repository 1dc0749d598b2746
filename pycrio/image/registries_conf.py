"""containers-registries.conf(5) version 2: search registries, short-name aliases, remapping, mirrors, blocking.

Only what pulling needs is read: `unqualified-search-registries`, `[aliases]`,
`[[registry]]` (`prefix`, `location`, `insecure`, `blocked`,
`mirror-by-digest-only`) and `[[registry.mirror]]` (`location`, `insecure`,
`pull-from-mirror`). `short-name-mode`, `credential-helpers` and
`additional-layer-store-auth-helper` are accepted and ignored (the daemon never
prompts, so every mode behaves as "permissive"); other unknown keys are
logged and ignored, as the containers tools do. Drop-in directories and
`short-name-aliases.conf` are not read.
"""

from __future__ import annotations

import logging
import pathlib
import re
import tomllib
from dataclasses import dataclass, field
from typing import Any

from pycrio.errors import FailedPrecondition, InvalidArgument
from pycrio.image.reference import DOCKER_HUB, Reference, is_short_name, parse

log = logging.getLogger(__name__)

DOCKER_HUB_HOST = "registry-1.docker.io"  # where docker.io's API is served
_IGNORED_KEYS = {"short-name-mode", "credential-helpers", "additional-layer-store-auth-helper"}
_SHORT_NAME_MODES = ("", "enforcing", "permissive", "disabled")
_PULL_FROM_MIRROR = ("", "all", "digest-only", "tag-only")
_HOST = re.compile(r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*)")


class RegistriesConfError(InvalidArgument):
    """The registries.conf file is not one pycrio can use; the message names the file, line and key."""


@dataclass(frozen=True)
class Source:
    """One place to pull an image from: a mirror or the (possibly remapped) origin."""

    host: str  # host[:port] the API is served on (docker.io is registry-1.docker.io)
    repository: str
    insecure: bool = False  # plain HTTP or unverified TLS allowed
    mirror: bool = False


@dataclass(frozen=True)
class Mirror:
    location: str
    insecure: bool = False
    pull_from_mirror: str = "all"


@dataclass(frozen=True)
class RegistryEntry:
    """One [[registry]] table."""

    prefix: str
    location: str
    insecure: bool = False
    blocked: bool = False
    mirror_by_digest_only: bool = False
    mirrors: tuple[Mirror, ...] = ()

    @property
    def wildcard(self) -> bool:
        return self.prefix.startswith("*.")

    def match(self, name: str) -> int:
        """How many leading characters of name (registry/repo[:tag][@digest]) this prefix matches; -1: none."""
        if self.wildcard:
            host_end = min((i for i in (name.find("/"), name.find(":"), name.find("@")) if i >= 0), default=len(name))
            host = name[:host_end]
            return host_end if host.endswith(self.prefix[1:]) else -1
        if name == self.prefix:
            return len(name)
        if not name.startswith(self.prefix):
            return -1
        following = name[len(self.prefix)]
        separators = "/:@" if "/" in self.prefix else "/"
        return len(self.prefix) if following in separators else -1


@dataclass
class RegistriesConf:
    """A loaded registries.conf; an empty one (no file) searches docker.io and pulls names as written."""

    path: str = ""
    search_registries: list[str] = field(default_factory=list)
    aliases: dict[str, str] = field(default_factory=dict)
    registries: list[RegistryEntry] = field(default_factory=list)

    @classmethod
    def load(cls, path: str | pathlib.Path) -> RegistriesConf:
        """Read path; a missing file is an empty configuration, anything unusable a RegistriesConfError."""
        path = pathlib.Path(path)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return cls(path=str(path))
        except OSError as e:
            raise RegistriesConfError(f"{path}: cannot read: {e.strerror}") from e
        try:
            text = raw.decode()
        except UnicodeDecodeError as e:
            raise RegistriesConfError(f"{path}: not UTF-8 text") from e
        return cls.loads(text, str(path))

    @classmethod
    def loads(cls, text: str, path: str = "<string>") -> RegistriesConf:
        """Parse registries.conf text; path only names the source in errors."""
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise RegistriesConfError(f"{path}: invalid TOML: {e}") from e
        return _Parser(path, text).conf(data)

    # ------------------------------------------------------------ lookups

    def candidates(self, name: str) -> list[Reference]:
        """The references to try, in order, for a name as the user wrote it."""
        ref = parse(name)
        if not is_short_name(name):
            return [ref]
        base = name.partition("@")[0]
        colon = base.rfind(":")
        short = base[:colon] if colon > base.rfind("/") else base
        suffix = name[len(short) :]
        alias = self.aliases.get(short)
        if alias:
            return [parse(alias + suffix)]
        if not self.search_registries:
            return [ref]
        return [parse(f"{registry}/{name}") for registry in self.search_registries]

    def entry_for(self, ref: Reference) -> tuple[RegistryEntry, int] | None:
        """The [[registry]] table with the longest prefix match for ref and the matched length.

        A wildcard prefix matches the whole host; on equal lengths a plain prefix beats a wildcard,
        and the longer (more specific) wildcard beats a shorter one.
        """
        text = str(ref)
        best: tuple[tuple[int, bool, int], RegistryEntry, int] | None = None
        for entry in self.registries:
            n = entry.match(text)
            if n < 0:
                continue
            rank = (n, not entry.wildcard, len(entry.prefix))
            if best is None or rank > best[0]:
                best = (rank, entry, n)
        return None if best is None else (best[1], best[2])

    def sources(self, ref: Reference) -> list[Source]:
        """Mirrors in order, then the origin; FailedPrecondition when the registry is blocked."""
        found = self.entry_for(ref)
        if found is None:
            return [Source(api_host(ref.registry), ref.repository)]
        entry, matched = found
        if entry.blocked:
            raise FailedPrecondition(
                f"pulling {ref} is blocked by {self.path} ([[registry]] prefix {entry.prefix!r} has blocked = true)"
            )
        text = str(ref)
        out = []
        by_digest = ref.digest is not None
        for mirror in entry.mirrors:
            if entry.mirror_by_digest_only and not by_digest:
                continue
            if mirror.pull_from_mirror == "digest-only" and not by_digest:
                continue
            if mirror.pull_from_mirror == "tag-only" and by_digest:
                continue
            host, repo = self._rewrite(text, matched, mirror.location, ref)
            out.append(Source(host, repo, mirror.insecure, mirror=True))
        host, repo = self._rewrite(text, matched, entry.location, ref)
        out.append(Source(host, repo, entry.insecure, mirror=False))
        return out

    def _rewrite(self, text: str, matched: int, location: str, ref: Reference) -> tuple[str, str]:
        """(API host, repository) after replacing the matched prefix of text with location."""
        if not location:
            return api_host(ref.registry), ref.repository
        rewritten = location + text[matched:]
        try:
            new = parse(rewritten)
        except InvalidArgument as e:
            raise FailedPrecondition(f"{self.path}: location {location!r} turns {ref} into an invalid name: {e}") from e
        return api_host(new.registry), new.repository


def api_host(registry: str) -> str:
    """The host serving a registry's API: docker.io's is registry-1.docker.io."""
    return DOCKER_HUB_HOST if registry in (DOCKER_HUB, "index.docker.io") else registry


class _Parser:
    """Type-checks the parsed TOML, naming file, line and key in every error."""

    def __init__(self, path: str, text: str):
        self.path, self.text = path, text
        self.mirrors_seen = 0  # [[registry.mirror]] tables read so far, to find their lines

    def line(self, header: str, nth: int, key: str | None) -> int | None:
        """The line of key (or of the header itself) in the nth [[header]]/[header] table; "" is the top level."""
        current, count, header_line = "", -1 if header else 0, None
        table = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?")
        assign = re.compile(r"^\s*\"?([A-Za-z0-9_.-]+)\"?\s*=")
        for number, text in enumerate(self.text.splitlines(), start=1):
            m = table.match(text)
            if m:
                current = m.group(1)
                if current == header:
                    count += 1
                    if count == nth:
                        header_line = number
                continue
            m = assign.match(text)
            if m and current == header and count == nth and m.group(1) == key:
                return number
        return header_line

    def error(self, message: str, what: str, header: str = "", nth: int = 0, key: str | None = None):
        line = self.line(header, nth, key)
        where = self.path + (f":{line}" if line else "")
        return RegistriesConfError(f"{where}: {what}: {message}")

    def typed(self, value: Any, kind: type, what: str, header: str = "", nth: int = 0, key: str | None = None) -> Any:
        names = {str: "a string", bool: "true or false", list: "an array", dict: "a table"}
        if not isinstance(value, kind):
            message = f"expected {names[kind]}, got {type(value).__name__} {value!r}"
            raise self.error(message, what, header, nth, key)
        return value

    def unknown(self, table: dict[str, Any], known: set[str], what: str) -> None:
        for key in table:
            if key not in known and key not in _IGNORED_KEYS:
                log.warning("%s: %s: unknown key %r ignored", self.path, what, key)

    def conf(self, data: dict[str, Any]) -> RegistriesConf:
        if "registries" in data:
            raise self.error(
                "the version 1 format ([registries.search], [registries.insecure], [registries.block]) "
                "is not supported; use unqualified-search-registries and [[registry]] tables (version 2)",
                "registries",
                "registries.search",
            )
        self.unknown(data, {"unqualified-search-registries", "aliases", "registry"}, "top level")
        conf = RegistriesConf(path=self.path)
        key = "unqualified-search-registries"
        for registry in self.typed(data.get(key, []), list, key, key=key):
            self.typed(registry, str, key, key=key)
            if not self.is_host(registry):
                raise self.error(f"{registry!r} is not host[:port]", key, key=key)
            conf.search_registries.append(registry)
        mode = self.typed(data.get("short-name-mode", ""), str, "short-name-mode", key="short-name-mode")
        if mode not in _SHORT_NAME_MODES:
            raise self.error(
                f"expected enforcing, permissive or disabled, got {mode!r}", "short-name-mode", key="short-name-mode"
            )
        for short, target in self.typed(data.get("aliases", {}), dict, "aliases", "aliases").items():
            self.alias(conf, short, target)
        for index, table in enumerate(self.typed(data.get("registry", []), list, "registry", key="registry")):
            what = f"[[registry]] table {index + 1}"
            conf.registries.append(self.registry(self.typed(table, dict, what, "registry", index), index))
        seen: dict[str, int] = {}
        for index, entry in enumerate(conf.registries):
            if entry.prefix in seen:
                raise self.error(
                    f"prefix {entry.prefix!r} is used by [[registry]] table {seen[entry.prefix] + 1} already",
                    f"[[registry]] table {index + 1}",
                    "registry",
                    index,
                )
            seen[entry.prefix] = index
        return conf

    @staticmethod
    def is_host(value: str) -> bool:
        host, _, port = value.partition(":")
        return bool(_HOST.fullmatch(host)) and (not port or port.isdigit())

    def alias(self, conf: RegistriesConf, short: str, target: Any) -> None:
        what = f"aliases.{short}"
        self.typed(target, str, what, "aliases", key=short)
        if not is_short_name(short) or short.startswith("localhost/") or "@" in short or ":" in short:
            raise self.error("an alias name must be a short name without registry, tag or digest", what, "aliases")
        problem = ""
        if not target:
            conf.aliases.pop(short, None)
            return
        if is_short_name(target):
            problem = f"alias {target!r} must be a fully qualified name (with a registry)"
        elif "@" in target or ":" in target.rpartition("/")[2]:
            problem = f"alias {target!r} must not include a tag or digest"
        else:
            try:
                parse(target)
            except InvalidArgument as e:
                problem = str(e)
        if problem:
            raise self.error(problem, what, "aliases", key=short)
        conf.aliases[short] = target

    def registry(self, table: dict[str, Any], index: int) -> RegistryEntry:
        what = f"[[registry]] table {index + 1}"

        def get(key: str, kind: type, default: Any) -> Any:
            return self.typed(table.get(key, default), kind, f"{what}: {key}", "registry", index, key)

        self.unknown(table, {"prefix", "location", "insecure", "blocked", "mirror", "mirror-by-digest-only"}, what)
        prefix, location = get("prefix", str, ""), get("location", str, "")
        insecure, blocked = get("insecure", bool, False), get("blocked", bool, False)
        by_digest = get("mirror-by-digest-only", bool, False)
        mirror_tables = get("mirror", list, [])
        prefix = prefix or location
        if not prefix:
            raise self.error("has neither prefix nor location", what, "registry", index)
        if prefix.startswith("*."):
            if "/" in prefix or ":" in prefix or "*" in prefix[1:] or not _HOST.fullmatch(prefix[2:]):
                message = f"wildcard prefix {prefix!r} must be *.host (no port, path, tag or other '*')"
                raise self.error(message, f"{what}: prefix", "registry", index, "prefix")
        else:
            self.check_name_prefix(prefix, f"{what}: prefix", index, "prefix")
            if prefix == "index.docker.io" or prefix.startswith("index.docker.io/"):
                prefix = DOCKER_HUB + prefix[len("index.docker.io") :]
        if location:
            self.check_name_prefix(location, f"{what}: location", index, "location")
        mirrors = []
        for number, mirror in enumerate(mirror_tables, start=1):
            mirrors.append(self.mirror(mirror, f"{what}: mirror {number}", by_digest))
        return RegistryEntry(prefix, location, insecure, blocked, by_digest, tuple(mirrors))

    def mirror(self, table: Any, what: str, by_digest_only: bool) -> Mirror:
        nth = self.mirrors_seen
        self.mirrors_seen += 1

        def get(key: str, kind: type, default: Any) -> Any:
            return self.typed(table.get(key, default), kind, f"{what}: {key}", "registry.mirror", nth, key)

        self.typed(table, dict, what, "registry.mirror", nth)
        self.unknown(table, {"location", "insecure", "pull-from-mirror"}, what)
        location, insecure = get("location", str, ""), get("insecure", bool, False)
        pull = get("pull-from-mirror", str, "")
        if not location:
            raise self.error("a mirror needs a location", what, "registry.mirror", nth)
        if not self.is_host(location.partition("/")[0]):
            raise self.error(f"{location!r} must start with host[:port]", f"{what}: location", "registry.mirror", nth)
        if location.partition("/")[2]:
            try:
                parse(location)
            except InvalidArgument as e:
                raise self.error(str(e), f"{what}: location", "registry.mirror", nth, "location") from None
        if pull not in _PULL_FROM_MIRROR:
            message = f"expected all, digest-only or tag-only, got {pull!r}"
            raise self.error(message, f"{what}: pull-from-mirror", "registry.mirror", nth, "pull-from-mirror")
        if pull and by_digest_only:
            message = "not allowed when the registry sets mirror-by-digest-only"
            raise self.error(message, f"{what}: pull-from-mirror", "registry.mirror", nth, "pull-from-mirror")
        return Mirror(location, insecure, pull or "all")

    def check_name_prefix(self, value: str, what: str, index: int, key: str) -> None:
        """value must be host[:port][/path][:tag|@digest]."""
        host, slash, _ = value.partition("/")
        problem = ""
        if not self.is_host(host) and not re.fullmatch(r"\[[a-fA-F0-9:]+\](?::[0-9]+)?", host):
            problem = f"{value!r} must start with host[:port]"
        elif slash:
            try:
                parse(value)
            except InvalidArgument as e:
                problem = str(e)
        if problem:
            raise self.error(problem, what, "registry", index, key)
