"""The config keys each builtin provider reads, and the check that finds typos among given keys.

Every provider module declares, next to its `PROVIDERS`, a `CONFIG_KEYS` map (reference ->
`ProviderKeys`): the keys of its provider config, of the source config of links it makes
(provider -> component) and of the target config of links to it (component -> provider). Each set
holds the keys we act on and the keys wasmCloud's own provider of that name reads that we do not
(`foreign`): those are accepted, so manifests written for wasmCloud keep deploying.

The rule every checker applies (docs/config-keys.md):

- a key close to a known or foreign key (`adress` for `address`) is a typo and is refused, with
  the suggestion, because the setting it meant would otherwise be ignored without a word;
- a key close to nothing is only worth a warning: wasmCloud's providers ignore keys they do not
  read, and one named config is often shared by several links and providers.

Keys are compared lower-cased: the providers read them case-insensitively.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

# Which config of a provider: its own, or a link's on the provider's side.
Role = Literal["provider", "source", "target"]
ROLE_TEXT: dict[Role, str] = {
    "provider": "provider config",
    "source": "link source config",
    "target": "link target config",
}
# How alike a key must be to a known one to be taken for its typo (difflib's ratio).
TYPO_CUTOFF = 0.75


@dataclass(frozen=True)
class KeySet:
    """The keys one config is read with: ours, and wasmCloud's that we accept and ignore."""

    known: tuple[str, ...] = ()
    foreign: tuple[str, ...] = ()

    def all(self) -> tuple[str, ...]:
        """Every accepted key."""
        return self.known + self.foreign


@dataclass(frozen=True)
class ProviderKeys:
    """The keys of one builtin provider, per config it reads."""

    name: str
    provider: KeySet = KeySet()
    source: KeySet = KeySet()
    target: KeySet = KeySet()

    def keys(self, role: Role) -> KeySet:
        """The key set of one role."""
        found: KeySet = getattr(self, role)
        return found


@dataclass(frozen=True)
class KeyProblem:
    """A key the provider does not read; `suggestion` is the known key it is likely a typo of."""

    key: str
    provider: str
    role: Role
    suggestion: str | None
    known: tuple[str, ...]

    @property
    def is_typo(self) -> bool:
        """A typo is refused; an unknown key close to nothing is only warned about."""
        return self.suggestion is not None

    def message(self) -> str:
        """`unknown key 'adress' for http-server: did you mean 'address'?` (or the keys it reads)."""
        head = f"unknown key {self.key!r} for {self.provider} ({ROLE_TEXT[self.role]})"
        if self.suggestion is not None:
            return f"{head}: did you mean {self.suggestion!r}?"
        keys = ", ".join(self.known) if self.known else "none"
        return f"{head}: not read by this provider, ignored (keys it reads: {keys})"


def key_problems(keys: Iterable[str], provider: ProviderKeys, role: Role) -> list[KeyProblem]:
    """Every key of a config that `provider` does not read in `role`, typos first."""
    given = [str(k) for k in keys]
    lowered = {k.lower() for k in given}
    keyset = provider.keys(role)
    accepted = keyset.all()
    out: list[KeyProblem] = []
    for key in given:
        k = key.lower()
        if k in accepted:
            continue
        close = difflib.get_close_matches(k, accepted, n=1, cutoff=TYPO_CUTOFF)
        # Both `hosts` and `host` given: `hosts` is not a typo of a key that is already there.
        suggestion = close[0] if close and close[0] not in lowered else None
        out.append(KeyProblem(key, provider.name, role, suggestion, keyset.known))
    return sorted(out, key=lambda p: (not p.is_typo, p.key))


def first_typo(keys: Iterable[str], provider: ProviderKeys, role: Role) -> KeyProblem | None:
    """The first key of a config that looks like a typo of a key `provider` reads, if any."""
    problems = key_problems(keys, provider, role)
    return problems[0] if problems and problems[0].is_typo else None
