"""`likeness subjects list|show|load|unload|download|import|status`: the inference service's subject models and
memory."""

from __future__ import annotations

import argparse
import json

from google.protobuf.json_format import MessageToDict

from likeness.cli.common import add_address_argument, connect, print_table
from likeness_client.v1 import inference_service_pb2 as inference_pb
from likeness_client.v1 import types_pb2


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "subjects", help="list subject models, pre-warm or evict them, show the inference server's memory"
    )
    commands = parser.add_subparsers(dest="subjects_command", metavar="ACTION", required=True)

    listing = commands.add_parser("list", help="subject models in storage with their load state, newest first")
    listing.add_argument("--base-model", default="", help="only models of this base model")
    listing.add_argument("--loaded", action="store_true", help="only models loaded in memory")
    listing.add_argument("--kind", choices=["subject", "style"], default="", help="only subjects or only styles")
    listing.set_defaults(func=run_list)

    show = commands.add_parser("show", help="one subject model as JSON")
    show.add_argument("model_id")
    show.set_defaults(func=run_show)

    load = commands.add_parser("load", help="load a subject model now (pre-warm before traffic)")
    load.add_argument("model_id")
    load.set_defaults(func=run_load)

    unload = commands.add_parser("unload", help="evict a subject model from memory")
    unload.add_argument("model_id")
    unload.set_defaults(func=run_unload)

    download = commands.add_parser(
        "download", help="download a subject model's files (weights, kohya export, manifest, samples) to a folder"
    )
    download.add_argument("model_id")
    download.add_argument("folder", help="where to write the files (created if needed)")
    download.add_argument(
        "--kind",
        action="append",
        choices=sorted(DOWNLOAD_KINDS),
        default=[],
        help="only files of this kind (repeatable; default: every file)",
    )
    download.set_defaults(func=run_download)

    importing = commands.add_parser(
        "import",
        help="import a LoRA file made with another tool (kohya / A1111 / civitai or diffusers, .safetensors)",
    )
    importing.add_argument("file", help="the LoRA's .safetensors file")
    importing.add_argument("--base-model", required=True, help="the catalog id of the base model it was made for")
    importing.add_argument("--style", action="store_true", help="import it as a style (no identifier needed)")
    importing.add_argument("--identifier", default="", help="the token it was trained with, e.g. ohwx (subjects)")
    importing.add_argument("--class-noun", default="", help="the subject's class, e.g. person (subjects)")
    importing.set_defaults(func=run_import)

    status = commands.add_parser("status", help="base models, loaded subjects, cache memory and queue")
    status.set_defaults(func=run_status)
    for sub in (listing, show, load, unload, download, importing, status):
        add_address_argument(sub)


#: `--kind` names: the ArtifactKind values without their prefix.
DOWNLOAD_KINDS = {
    inference_pb.ArtifactKind.Name(value).removeprefix("ARTIFACT_KIND_").lower(): value
    for value in inference_pb.ArtifactKind.values()
    if value != inference_pb.ARTIFACT_KIND_UNSPECIFIED
}


def _state_name(state: int) -> str:
    return inference_pb.LoadState.Name(state).removeprefix("LOAD_STATE_").lower().replace("_", " ")


def _state(status: inference_pb.SubjectModelStatus) -> str:
    name = _state_name(status.state)
    return f"{name}: {status.failure_reason}" if status.failure_reason else name


def _mib(size: int, empty: str = "-") -> str:
    return f"{size / 2**20:.1f} MiB" if size else empty


def _row(status: inference_pb.SubjectModelStatus) -> list[str]:
    model = status.model
    method = types_pb2.TrainingMethod.Name(model.method).removeprefix("TRAINING_METHOD_").lower()
    subject = f"{model.identifier} {model.class_noun}".strip()
    return [model.model_id, model.base_model, method, subject, _state(status), _mib(status.memory_bytes)]


HEADERS = ["id", "base model", "method", "subject", "state", "memory"]


def run_list(args: argparse.Namespace) -> int:
    with connect(args) as client:
        models = client.list_subject_models(base_model=args.base_model, loaded_only=args.loaded, kind=args.kind)
    print_table([_row(status) for status in models], HEADERS)
    return 0


def run_download(args: argparse.Namespace) -> int:
    with connect(args) as client:
        files = client.download_subject_model(
            args.model_id, args.folder, kinds=[DOWNLOAD_KINDS[kind] for kind in args.kind]
        )
    rows = [
        [
            str(file.path),
            inference_pb.ArtifactKind.Name(file.kind).removeprefix("ARTIFACT_KIND_").lower(),
            _mib(file.size_bytes, "0"),
        ]
        for file in files
    ]
    print_table(rows, ["file", "kind", "size"])
    return 0


def run_import(args: argparse.Namespace) -> int:
    with connect(args) as client:
        response = client.import_lora(
            args.file,
            base_model=args.base_model,
            kind="style" if args.style else "subject",
            identifier=args.identifier,
            class_noun=args.class_noun,
        )
    layout = inference_pb.LoraFormat.Name(response.source_format).removeprefix("LORA_FORMAT_").lower()
    print(f"imported {args.file} ({layout} layout, {response.layer_count} layers) as {response.model.model.model_id}")
    print_table([_row(response.model)], HEADERS)
    return 0


def run_show(args: argparse.Namespace) -> int:
    with connect(args) as client:
        status = client.get_subject_model(args.model_id)
    print(json.dumps(MessageToDict(status), indent=2))
    return 0


def run_load(args: argparse.Namespace) -> int:
    with connect(args) as client:
        status = client.load_subject_model(args.model_id)
    print_table([_row(status)], HEADERS)
    return 0 if status.state == inference_pb.LOAD_STATE_LOADED else 1


def run_unload(args: argparse.Namespace) -> int:
    with connect(args) as client:
        status = client.unload_subject_model(args.model_id)
    print_table([_row(status)], HEADERS)
    return 0


def run_status(args: argparse.Namespace) -> int:
    with connect(args) as client:
        status = client.get_server_status()
    print(f"device: {status.device}")
    print(f"queue: {status.queue_depth} waiting of {status.queue_capacity}")
    used, budget = status.subject_cache_used_bytes, status.subject_cache_budget_bytes
    print(f"subject cache: {_mib(used, '0 MiB')} of {_mib(budget)} ({100 * used / budget if budget else 0:.0f}%)\n")
    bases = [
        [
            b.base_model,
            b.arch,
            _state_name(b.state),
            f"{b.default_resolution} px" if b.default_resolution else "-",
            _mib(b.memory_bytes),
        ]
        for b in status.base_models
    ]
    print_table(bases, ["base model", "arch", "state", "default size", "memory"])
    print()
    if status.loaded_subjects:
        print_table([_row(s) for s in status.loaded_subjects], HEADERS)
    else:
        print("no subject models loaded")
    return 0
