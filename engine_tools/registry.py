"""Finding engine tool plugins (entry point group ``backupctl.engine_tools``) and resolving methods.

Only this module and the plugins know which engines exist; the core asks it.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import entry_points

from backupctl.errors import BackupctlError, UsageError
from engine_tools.base import ANY_ENGINE, KNOWN_ENGINES, Capability, EngineTool, MethodSpec

GROUP = "backupctl.engine_tools"


@dataclass(frozen=True)
class ResolvedMethod:
    tool: EngineTool
    spec: MethodSpec


def load_tools() -> list[EngineTool]:
    """Every installed plugin, once each (by entry point name), in name order."""
    tools: dict[str, EngineTool] = {}
    for ep in sorted(entry_points(group=GROUP), key=lambda e: e.name):
        if ep.name in tools:
            continue
        try:
            obj = ep.load()
        except Exception as exc:  # noqa: BLE001 - a broken third-party plugin must not break the CLI
            raise BackupctlError(f"the engine tool plugin {ep.name!r} ({ep.value}) failed to load: {exc}",
                                 "reinstall or remove that plugin") from None
        tools[ep.name] = obj() if isinstance(obj, type) else obj
    return list(tools.values())


def engines() -> tuple[str, ...]:
    """The engines a cluster may be registered with: the built-in list plus any a plugin declares."""
    extra = {e for t in load_tools() for e in t.engines if e != ANY_ENGINE and e not in KNOWN_ENGINES}
    return KNOWN_ENGINES + tuple(sorted(extra))


def methods_for(engine: str) -> list[ResolvedMethod]:
    """Methods usable for ``engine``: engine-specific plugins first, then generic (``"*"``) ones."""
    tools = load_tools()
    specific = [ResolvedMethod(t, m) for t in tools if engine in t.engines for m in t.methods]
    generic = [ResolvedMethod(t, m) for t in tools if ANY_ENGINE in t.engines and engine not in t.engines
               for m in t.methods]
    return specific + generic


def resolve_method(engine: str, method: str | None) -> ResolvedMethod:
    """The plugin and method for ``engine``; with no method, the engine's default full method."""
    candidates = methods_for(engine)
    if method is None:
        for r in candidates:
            if r.spec.default and ANY_ENGINE not in r.tool.engines:
                return r
        fulls = [r for r in candidates if r.spec.can(Capability.FULL)]
        if not fulls:
            raise UsageError(f"no backup method is available for engine {engine}",
                             "install an engine tool plugin for it, in entry point group backupctl.engine_tools")
        return fulls[0]
    for r in candidates:
        if r.spec.name == method:
            return r
    known = ", ".join(sorted({r.spec.name for r in candidates})) or "none installed"
    raise UsageError(f"unknown backup method {method!r} for engine {engine}",
                     f"methods for {engine}: {known}")


def method_names(engine: str) -> list[str]:
    return [r.spec.name for r in methods_for(engine)]
