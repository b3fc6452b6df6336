"""Configuration of the services, from command-line flags and `LIKENESS_*` environment variables.

Every setting has a flag (`--storage-url`) and an environment variable (`LIKENESS_STORAGE_URL`); a flag wins over the
environment, the environment over the default. Unknown or malformed values fail at start-up with one clear line.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from likeness.errors import InvalidArgument

if TYPE_CHECKING:
    from likeness.identity.quotas import QuotaLimits
    from likeness.net.egress import EgressPolicy
    from likeness.server.tls import TlsFiles

#: The built-in base models ship with the package, so the embedded default needs no download: `toy-sd15` is
#: pretrained on a synthetic world (docs/personalization.md), the tiny ones are random-weight SD 1.x and SDXL.
DEFAULT_BASE_MODELS = "toy-sd15=builtin:toy,tiny-sd15=builtin:sd15,tiny-sdxl=builtin:sdxl"


@dataclass(frozen=True)
class Settings:
    """All settings. Field docs are the help text of the matching flag."""

    # --- server ---
    host: str = field(default="0.0.0.0", metadata={"help": "address the gRPC server binds"})
    port: int = field(default=50051, metadata={"help": "gRPC port"})
    metrics_port: int = field(default=9090, metadata={"help": "Prometheus /metrics HTTP port (0 disables)"})
    grace_seconds: float = field(default=30.0, metadata={"help": "SIGTERM drain period before forced stop"})
    auth: str = field(
        default="none",
        metadata={"help": "none (every caller is tenant 'default'; logs a warning) or api-key (Bearer API keys)"},
    )
    tls_cert_file: str = field(
        default="", metadata={"help": "PEM certificate chain: serve gRPC and metrics over TLS (reloaded on change)"}
    )
    tls_key_file: str = field(default="", metadata={"help": "PEM private key of tls_cert_file"})
    tls_client_ca_file: str = field(
        default="", metadata={"help": "PEM CA: require client certificates it signed on the gRPC port (mutual TLS)"}
    )
    auth_cache_seconds: float = field(
        default=30.0, metadata={"help": "how long a verified API key is trusted before it is checked again"}
    )
    mtls_tenants: bool = field(
        default=False,
        metadata={
            "help": "with tls_client_ca_file: a caller without an API key is the tenant its client certificate "
            "names (common name), role user"
        },
    )
    quota_active_jobs: int = field(
        default=0, metadata={"help": "queued plus running training jobs per tenant (0: unlimited)"}
    )
    quota_subject_models: int = field(
        default=0,
        metadata={"help": "stored subject models per tenant, counting jobs that will publish one (0: unlimited)"},
    )
    quota_images_per_minute: int = field(
        default=0, metadata={"help": "images generated per tenant and minute, over all replicas (0: unlimited)"}
    )
    max_message_mb: int = field(default=64, metadata={"help": "largest gRPC message accepted or sent, MiB"})
    log_level: str = field(default="INFO", metadata={"help": "DEBUG, INFO, WARNING or ERROR"})
    log_format: str = field(default="json", metadata={"help": "json or text"})
    # --- storage and models ---
    storage_url: str = field(
        default="var/storage", metadata={"help": "shared storage: a local directory or s3://bucket/prefix"}
    )
    cache_dir: str = field(default="var/cache", metadata={"help": "local cache for models and downloads"})
    base_models: str = field(
        default=DEFAULT_BASE_MODELS,
        metadata={"help": "base model catalog: id=source pairs, source a folder, .safetensors file or builtin:ARCH"},
    )
    default_base_model: str = field(default="toy-sd15", metadata={"help": "base model used when none is named"})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda or cuda:N"})
    torch_threads: int = field(
        default=0, metadata={"help": "CPU threads for torch and training workers (0: the container's CPU limit)"}
    )
    # --- control plane ---
    database_url: str = field(
        default="",
        metadata={
            "help": "control-plane database: postgresql://USER:PASS@HOST/DB for clusters, sqlite:///FILE embedded "
            "(empty: likeness.db beside a local storage root, e.g. var/likeness.db)"
        },
    )
    # --- trainer ---
    role: str = field(
        default="all", metadata={"help": "trainer role: api (RPCs only), worker (trains leased jobs) or all (both)"}
    )
    lease_seconds: float = field(
        default=15.0, metadata={"help": "a worker's lease on a job lasts this long past its last heartbeat"}
    )
    heartbeat_seconds: float = field(
        default=2.0, metadata={"help": "how often a worker renews its lease and reads cancel requests"}
    )
    watch_poll_ms: int = field(default=100, metadata={"help": "how often watchers look for new job events, ms"})
    trainer_queue_capacity: int = field(default=16, metadata={"help": "queued training jobs before refusing"})
    trainer_processes_per_job: int = field(
        default=1,
        metadata={
            "help": "devices one job trains on, data-parallel under accelerate (a job's spec.processes may ask for "
            "fewer); with --device cuda each worker slot takes that many GPUs of the node"
        },
    )
    trainer_progress_interval_seconds: float = field(
        default=1.0, metadata={"help": "least time between two progress events of a job"}
    )
    # --- webhooks and photo URLs (outbound requests to addresses callers name) ---
    webhook_allow_cidrs: str = field(
        default="",
        metadata={
            "help": "CIDR ranges webhook URLs may reach although refused by default (loopback, private, "
            "link-local, ...), comma-separated, e.g. an internal receiver's 10.20.0.0/16"
        },
    )
    webhook_timeout_seconds: float = field(
        default=10.0, metadata={"help": "time limit of one webhook POST, from connecting to the answer"}
    )
    webhook_max_attempts: int = field(
        default=5, metadata={"help": "attempts of one webhook delivery before it is marked FAILED"}
    )
    webhook_backoff_seconds: float = field(
        default=15.0, metadata={"help": "delay before a delivery's second attempt; it doubles for each later one"}
    )
    fetch_allow_cidrs: str = field(
        default="",
        metadata={
            "help": "CIDR ranges photo URLs (DatasetOptions.photo_uris) may reach although refused by default; "
            "http:// URLs are fetched only from these"
        },
    )
    fetch_max_mb: int = field(default=20, metadata={"help": "largest photo fetched from a URL, MiB"})
    fetch_timeout_seconds: float = field(default=20.0, metadata={"help": "time limit of fetching one photo URL"})
    egress_deny_cidrs: str = field(
        default="",
        metadata={
            "help": "CIDR ranges no webhook or photo URL may reach even when allowed (the cluster's own ranges "
            "when they are public addresses), comma-separated"
        },
    )
    # --- inference ---
    inference_queue_capacity: int = field(default=64, metadata={"help": "waiting requests before refusing"})
    subject_cache_mb: int = field(default=2048, metadata={"help": "memory budget of loaded subject models, MiB"})
    batch_window_ms: int = field(default=20, metadata={"help": "how long to wait to batch similar requests"})
    max_batch_images: int = field(default=8, metadata={"help": "most images denoised together in one batch"})
    compile_unet: bool = field(
        default=False,
        metadata={
            "help": "torch.compile each base model's UNet at load, warmed up per batch bucket; subjects then switch "
            "and mix without recompiling (docs/inference.md)"
        },
    )
    compile_backend: str = field(default="inductor", metadata={"help": "torch.compile backend of --compile-unet"})
    compile_lora_rank: int = field(
        default=32, metadata={"help": "with --compile-unet: the total LoRA rank one image may carry (subject + styles)"}
    )
    compile_buckets: str = field(
        default="1,2,4,8", metadata={"help": "with --compile-unet: batch sizes compiled at warm-up, comma-separated"}
    )
    subject_sweep_seconds: float = field(
        default=10.0,
        metadata={"help": "how often inference checks that its cached subject models still exist (deletion bound)"},
    )
    preload_base_models: str = field(
        default="", metadata={"help": "comma-separated base model ids to load at start ('*' for all)"}
    )
    # --- gallery ---
    gallery_semantic: bool = field(default=False, metadata={"help": "rank with sentence embeddings too"})
    gallery_record_generations: bool = field(
        default=False,
        metadata={"help": "record generated images in the gallery when a request does not say (record_in_gallery)"},
    )

    # --- studio ---
    studio_port: int = field(default=8080, metadata={"help": "Likeness Studio (web console) HTTP port"})
    studio_secret: str = field(
        default="",
        metadata={"help": "key sealing Studio sessions; the same on every Studio replica (empty: random per start)"},
    )
    studio_services: str = field(
        default="", metadata={"help": "gRPC address the Studio calls (empty: this server, 127.0.0.1:port)"}
    )
    studio_tls_ca_file: str = field(default="", metadata={"help": "PEM CA the Studio verifies the services with"})
    studio_secure_cookies: bool = field(
        default=False, metadata={"help": "mark the Studio's session cookie Secure (serve it behind HTTPS)"}
    )

    @property
    def tls_files(self) -> TlsFiles | None:
        """The TLS files when TLS is on (a certificate and its key are set), else None."""
        if not self.tls_cert_file:
            return None
        from likeness.server.tls import TlsFiles

        return TlsFiles(self.tls_cert_file, self.tls_key_file, self.tls_client_ca_file)

    @property
    def quota_limits(self) -> QuotaLimits:
        """The default per-tenant quotas (operators override them per tenant: `likeness quotas set`)."""
        from likeness.identity.quotas import QuotaLimits

        return QuotaLimits(self.quota_active_jobs, self.quota_subject_models, self.quota_images_per_minute)

    @property
    def webhook_policy(self) -> EgressPolicy:
        """Where webhook POSTs may go (`webhook_allow_cidrs`, `egress_deny_cidrs`)."""
        from likeness.net.egress import EgressPolicy, parse_cidrs

        return EgressPolicy(
            allow=parse_cidrs(self.webhook_allow_cidrs, field="webhook_allow_cidrs"),
            deny=parse_cidrs(self.egress_deny_cidrs, field="egress_deny_cidrs"),
            allow_setting="--webhook-allow-cidrs",
            deny_setting="--egress-deny-cidrs",
        )

    @property
    def fetch_policy(self) -> EgressPolicy:
        """Where photo URLs may be fetched from (`fetch_allow_cidrs`, `egress_deny_cidrs`); http:// only from
        allowed ranges."""
        from likeness.net.egress import EgressPolicy, parse_cidrs

        return EgressPolicy(
            allow=parse_cidrs(self.fetch_allow_cidrs, field="fetch_allow_cidrs"),
            deny=parse_cidrs(self.egress_deny_cidrs, field="egress_deny_cidrs"),
            allow_setting="--fetch-allow-cidrs",
            deny_setting="--egress-deny-cidrs",
            plain_http=False,
        )

    @property
    def storage_root_is_local(self) -> bool:
        return "://" not in self.storage_url or self.storage_url.startswith("file://")

    @property
    def cache_path(self) -> Path:
        return Path(self.cache_dir)

    @property
    def resolved_database_url(self) -> str:
        """The database URL to open: the setting, else an SQLite file beside the local storage root (or in the
        cache folder when storage is remote, which suits one node only)."""
        if self.database_url:
            return self.database_url
        if self.storage_root_is_local:
            root = Path(self.storage_url.removeprefix("file://")).expanduser().absolute()
            return f"sqlite:///{root.parent / 'likeness.db'}"
        return f"sqlite:///{Path(self.cache_dir).expanduser().absolute() / 'likeness.db'}"


_KIND_NAMES = {"int": "an integer", "float": "a number"}
_LOG_LEVELS = {"DEBUG", "INFO", "WARNING", "ERROR"}


def _env_name(name: str) -> str:
    return "LIKENESS_" + name.upper()


def _parse_bool(text: str, name: str) -> bool:
    lowered = text.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise InvalidArgument(f"expected true or false, got {text!r}", field=_env_name(name))


def _convert(f: dataclasses.Field, raw: Any, origin: str) -> Any:
    if f.type in ("bool", bool):
        return raw if isinstance(raw, bool) else _parse_bool(str(raw), f.name)
    try:
        if f.type in ("int", int):
            return int(raw)
        if f.type in ("float", float):
            return float(raw)
    except (TypeError, ValueError):
        raise InvalidArgument(f"expected {_KIND_NAMES[str(f.type)]}, got {raw!r}", field=origin) from None
    return str(raw)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds one flag per setting; defaults stay None so the environment can fill them in."""
    for f in dataclasses.fields(Settings):
        flag = "--" + f.name.replace("_", "-")
        help_text = f"{f.metadata.get('help', '')} (env {_env_name(f.name)}, default {f.default!r})"
        if f.type in ("bool", bool):
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            parser.add_argument(flag, dest=f.name, default=None, help=help_text)


def load_settings(args: argparse.Namespace | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Builds settings from parsed flags over environment variables over defaults, and validates them."""
    environ = os.environ if environ is None else environ
    known = {_env_name(f.name) for f in dataclasses.fields(Settings)}
    unknown = sorted(
        k
        for k in environ
        if k.startswith("LIKENESS_")
        and k not in known
        and k not in _PASSTHROUGH
        and not _is_service_link(k, environ[k])
    )
    if unknown:
        raise InvalidArgument("unknown setting; known ones are listed by `likeness serve --help`", field=unknown[0])
    values: dict[str, Any] = {}
    for f in dataclasses.fields(Settings):
        flag_value = getattr(args, f.name, None) if args is not None else None
        if flag_value is not None:
            values[f.name] = _convert(f, flag_value, "--" + f.name.replace("_", "-"))
        elif _env_name(f.name) in environ and not _INJECTED_LINK.match(environ[_env_name(f.name)]):
            values[f.name] = _convert(f, environ[_env_name(f.name)], _env_name(f.name))
    settings = Settings(**values)
    validate(settings)
    return settings


#: Kubernetes injects `<SERVICE>_SERVICE_HOST`, `<SERVICE>_PORT=tcp://...` and friends for every Service in the
#: namespace; for Services named `likeness-*` they carry our prefix but are not settings.
_SERVICE_LINK = re.compile(
    r"^LIKENESS_[A-Z0-9_]+_(SERVICE_HOST|SERVICE_PORT(_[A-Z0-9_]+)?|PORT(_\d+_(TCP|UDP|SCTP)(_PROTO|_PORT|_ADDR)?)?)$"
)


#: The value of a service link that shares its name with a setting (the Service `likeness-studio` injects
#: LIKENESS_STUDIO_PORT=tcp://10.0.0.7:8080 into pods with service links on): never a setting's value.
_INJECTED_LINK = re.compile(r"^(tcp|udp|sctp)://")


def _is_service_link(name: str, value: str) -> bool:
    if not _SERVICE_LINK.match(name):
        return False
    return value.isdigit() or "://" in value or value.replace(".", "").isdigit() or value in {"tcp", "udp", "sctp"}


#: Environment variables with the LIKENESS_ prefix that are read elsewhere, not settings of the server.
_PASSTHROUGH = {
    "LIKENESS_S3_ENDPOINT_URL",
    "LIKENESS_DREAMBENCH_DIR",
    # The client's (LikenessClient, the CLI's client commands), often exported in the shell that runs a server.
    "LIKENESS_ADDRESS",
    "LIKENESS_API_KEY",
    "LIKENESS_TLS_CA_FILE",
    # `likeness train --webhook-secret`: the signing secret of a job's webhook, kept out of the shell history.
    "LIKENESS_WEBHOOK_SECRET",
    # The load test's settings (bench/load/locustfile.py), often exported in the shell that also runs a server.
    "LIKENESS_LOAD_SUBJECTS",
    "LIKENESS_LOAD_STEPS",
    "LIKENESS_LOAD_SIZE",
    "LIKENESS_LOAD_IMAGES",
    "LIKENESS_LOAD_GALLERY_HOST",
}


def validate(settings: Settings) -> None:
    """Rejects values that cannot work, naming the setting."""
    for name in ("port", "metrics_port"):
        value = getattr(settings, name)
        if not 0 <= value <= 65535:
            raise InvalidArgument(f"must be a port number 0-65535, got {value}", field=name)
    if settings.log_level.upper() not in _LOG_LEVELS:
        raise InvalidArgument(f"must be one of {sorted(_LOG_LEVELS)}, got {settings.log_level!r}", field="log_level")
    if settings.log_format not in {"json", "text"}:
        raise InvalidArgument(f"must be json or text, got {settings.log_format!r}", field="log_format")
    positive = (
        "max_message_mb",
        "trainer_queue_capacity",
        "trainer_processes_per_job",
        "inference_queue_capacity",
        "subject_cache_mb",
        "max_batch_images",
        "compile_lora_rank",
    )
    for name in positive:
        if getattr(settings, name) <= 0:
            raise InvalidArgument(f"must be positive, got {getattr(settings, name)}", field=name)
    if settings.torch_threads < 0:
        raise InvalidArgument(f"must be 0 (automatic) or positive, got {settings.torch_threads}", field="torch_threads")
    if settings.grace_seconds < 0 or settings.batch_window_ms < 0:
        raise InvalidArgument("must not be negative", field="grace_seconds/batch_window_ms")
    if bool(settings.tls_cert_file) != bool(settings.tls_key_file):
        raise InvalidArgument("set tls_cert_file and tls_key_file together", field="tls_key_file")
    if settings.tls_client_ca_file and not settings.tls_cert_file:
        raise InvalidArgument(
            "mutual TLS needs the server's own tls_cert_file and tls_key_file", field="tls_client_ca_file"
        )
    if settings.auth not in {"none", "api-key"}:
        raise InvalidArgument(f"must be none or api-key, got {settings.auth!r}", field="auth")
    if settings.subject_sweep_seconds <= 0:
        raise InvalidArgument("must be positive", field="subject_sweep_seconds")
    for name in ("quota_active_jobs", "quota_subject_models", "quota_images_per_minute"):
        if getattr(settings, name) < 0:
            raise InvalidArgument("must be 0 (unlimited) or positive", field=name)
    if settings.mtls_tenants and not settings.tls_client_ca_file:
        raise InvalidArgument("needs tls_client_ca_file: client certificates must be verified", field="mtls_tenants")
    if settings.auth_cache_seconds < 0:
        raise InvalidArgument("must not be negative", field="auth_cache_seconds")
    if settings.role not in {"all", "api", "worker"}:
        raise InvalidArgument(f"must be api, worker or all, got {settings.role!r}", field="role")
    if settings.heartbeat_seconds <= 0 or settings.watch_poll_ms <= 0:
        raise InvalidArgument("must be positive", field="heartbeat_seconds/watch_poll_ms")
    if settings.lease_seconds < 2 * settings.heartbeat_seconds:
        raise InvalidArgument(
            f"must be at least twice heartbeat_seconds ({settings.heartbeat_seconds}) so one late heartbeat does not "
            f"lose the lease, got {settings.lease_seconds}",
            field="lease_seconds",
        )
    for name in ("webhook_timeout_seconds", "fetch_timeout_seconds", "webhook_max_attempts", "fetch_max_mb"):
        if getattr(settings, name) <= 0:
            raise InvalidArgument(f"must be positive, got {getattr(settings, name)}", field=name)
    if settings.webhook_backoff_seconds < 0:
        raise InvalidArgument("must not be negative", field="webhook_backoff_seconds")
    settings.webhook_policy  # noqa: B018 - parses the CIDR settings, naming the one that is malformed
    settings.fetch_policy  # noqa: B018
    from likeness.controlplane.database import parse_database_url

    parse_database_url(settings.resolved_database_url)
    device = settings.device
    if not (device in {"auto", "cpu", "cuda", "mps"} or (device.startswith("cuda:") and device[5:].isdigit())):
        raise InvalidArgument(f"must be auto, cpu, cuda, cuda:N or mps, got {device!r}", field="device")
