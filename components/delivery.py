"""Day-2 delivery: configuration files reach a server through remote commands, never user data.

Each file is one remote command (`RemoteCommand`) named `<server>:<absolute path>` that writes its
stdin with `install` (mode and owner set as the file is created, so a secret is never readable
by others, not even for a moment), and only when the file on the server differs
(render/delivery.write_file). A changed file changes its trigger and the command runs again;
the server itself is untouched. The apply step after the files runs its script only when one
of them was written (render/delivery.apply_when_pending). Every command waits for its host's
turn (remote_command.DeliveryQueues). The offline preview reads the files back from these
commands, by that name, as the server's artifacts."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TypeVar

import pulumi

from unde_infra.files import APT_INSTALL, SetupStep
from unde_infra.naming import delivery_name
from unde_infra.render.delivery import account_packages, apply_when_pending, marker_path, write_file
from unde_infra.render.escape import shell_command
from unde_infra.render.patroni import RenderedFile

from .hosts import Host
from .remote_command import RemoteCommand


@dataclass(frozen=True)
class RemoteFile:
    content: pulumi.Input[str]
    mode: str = "0644"
    owner: str = "root"
    group: str = "root"
    secret: bool = False
    # The content's sha256, when it is computed together with the content (a rendered bundle's
    # files): then `content` and `digest` come already as secret as the file is, and deliver
    # uses both as they are.
    digest: pulumi.Input[str] | None = None


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _stdin_and_trigger(spec: RemoteFile) -> tuple[pulumi.Input[str], pulumi.Input[str]]:
    """What the delivery writes and the digest that triggers it again. A file known as text
    costs no Output (a secret one two); one from Outputs costs its digest's."""
    if spec.digest is not None:
        return spec.content, spec.digest
    if isinstance(spec.content, str):
        digest = _digest(spec.content)
        if spec.secret:
            return pulumi.Output.secret(spec.content), pulumi.Output.secret(digest)
        return spec.content, digest
    content: pulumi.Output[str] = (
        pulumi.Output.secret(spec.content) if spec.secret else pulumi.Output.from_input(spec.content)  # type: ignore[arg-type]
    )
    return content, content.apply(_digest)


def deliver(
    host: Host,
    files: Mapping[str, RemoteFile],
    parent: pulumi.Resource,
    apply: str | None = None,
    depends_on: list[pulumi.Resource] | None = None,
    apply_label: str | None = None,
    first: Sequence[str] = (),
) -> list[pulumi.Resource]:
    """Write `files` on `host`, then run `apply` (a reload) whenever any of them changed.
    `apply_label` tells apart several deliveries to one host (each tunnel on helsinki-gw).
    `first`: packages installed before the files are written, where a package's installation
    would otherwise change them (PgBouncer's postinst sets its files' mode)."""
    written: list[pulumi.Resource] = []
    digests: list[pulumi.Input[str]] = []
    needs = [r for r in (host.resource, *(depends_on or [])) if r is not None]
    marker = marker_path(apply_id(parent, apply_label)) if apply and files else None
    packages = sorted({*account_packages({name for spec in files.values() for name in (spec.owner, spec.group)}),
                       *first})
    if packages:
        needs.append(RemoteCommand(
            f"{host.server.name}:packages" + (f":{apply_label}" if apply_label else ""),
            host=host,
            create=host.as_root(shell_command([APT_INSTALL, *packages])),
            opts=pulumi.ResourceOptions(parent=parent, depends_on=list(needs)),
        ))
    for path, spec in sorted(files.items()):
        content, digest = _stdin_and_trigger(spec)
        digests.append(digest)
        written.append(
            RemoteCommand(
                delivery_name(host.server.name, path),
                host=host,
                create=host.as_root(write_file(path, spec.mode, spec.owner, spec.group, marker)),
                stdin=content,
                triggers=[digest],
                opts=pulumi.ResourceOptions(parent=parent, depends_on=needs),
            )
        )
    if apply:
        written.append(
            RemoteCommand(
                f"{host.server.name}:apply" + (f":{apply_label}" if apply_label else ""),
                host=host,
                create=host.as_root(apply_when_pending(apply, marker) if marker is not None else apply),
                triggers=digests,
                opts=pulumi.ResourceOptions(parent=parent, depends_on=list(written)),
            )
        )
    return written


def apply_id(parent: pulumi.Resource, apply_label: str | None) -> str:
    """The name of an apply step's marker on its server: the delivering component's type and the
    label. The step's resource name would not do: names repeat on one server under components
    of different types (`local-shard-0:apply` is the shard's setup and its tunnel's)."""
    kind = getattr(parent, "TYPE", None) or type(parent).__name__
    return f"{kind.replace(':', '.')}.{apply_label or 'apply'}"


T = TypeVar("T")


def pick(files: pulumi.Output[dict[str, str]], path: str) -> pulumi.Output[str]:
    """One file of a set rendered as a whole from secret values."""
    return files.apply(lambda rendered: rendered[path])


def _with_digests(bundle: Mapping[str, RenderedFile | str]) -> dict[str, tuple[str, str]]:
    contents = {path: f if isinstance(f, str) else f.content for path, f in bundle.items()}
    return {path: (text, _digest(text)) for path, text in contents.items()}


def _bundle_files(
    rendered: pulumi.Output[Mapping[str, RenderedFile | str]], specs: Mapping[str, RenderedFile]
) -> dict[str, RemoteFile]:
    """The files of one bundle rendered as a whole: one apply renders every content and its
    digest; the secret files read them from one secret Output, the others from one unwrapped
    Output (so previews and diffs show them), each file its content and its digest."""
    sources: dict[bool, pulumi.Output[dict[str, tuple[str, str]]]] = {}
    whole = rendered.apply(_with_digests)
    files = {}
    for path, spec in specs.items():
        if spec.secret not in sources:
            sources[spec.secret] = pulumi.Output.secret(whole) if spec.secret else pulumi.Output.unsecret(whole)
        source = sources[spec.secret]
        files[path] = RemoteFile(
            source.apply(partial(_part, path=path, index=0)),
            mode=spec.mode,
            owner=spec.owner,
            group=spec.group,
            secret=spec.secret,
            digest=source.apply(partial(_part, path=path, index=1)),
        )
    return files


def _part(bundle: dict[str, tuple[str, str]], path: str, index: int) -> str:
    return bundle[path][index]


def rendered_files(
    rendered: pulumi.Output[dict[str, RenderedFile]], sample: dict[str, RenderedFile]
) -> dict[str, RemoteFile]:
    """Files rendered together from secret values, each with the mode, owner and secrecy its
    renderer gives it (`sample` tells them, and the paths, in advance: a render of sample
    values, or the files that need no secret). The files that carry no secret are unwrapped,
    so previews and diffs show them."""
    return _bundle_files(rendered, sample)  # type: ignore[arg-type]


def secret_files(
    render: Callable[[T], dict[str, str]], values: pulumi.Output[T], sample: T, **options: str
) -> dict[str, RemoteFile]:
    """Files rendered from secret values, as secret RemoteFiles. The paths are known before the
    values (a render of `sample` gives them), so each file is its own resource from the start."""
    rendered: pulumi.Output[dict[str, str]] = pulumi.Output.secret(values).apply(render)  # type: ignore[arg-type]
    specs = {path: RenderedFile("", mode="0600", secret=True, **options) for path in render(sample)}
    return _bundle_files(rendered, specs)  # type: ignore[arg-type]


def setup_files(step: SetupStep) -> dict[str, RemoteFile]:
    """A setup step's script (executable) and its parameters, to deliver before it runs."""
    return {path: RemoteFile(text, mode="0755" if path == step.path else "0644") for path, text in step.files().items()}
