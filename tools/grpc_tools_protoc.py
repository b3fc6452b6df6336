"""grpcio-tools' bundled protoc for buf.gen.yaml: the Python code must come from the pinned grpcio-tools.

Two modes, each behind a small wrapper next to this file:

  protoc-grpc-tools       protoc itself (buf `protoc_path` for `protoc_builtin: python` / `pyi`).
  protoc-gen-grpc_python  a protoc plugin running grpcio-tools' built-in grpc_python generator (buf has no
                          `protoc_builtin` for it).

buf hands protoc its compiled image (`--descriptor_set_in`), in which every field carries a json_name. protoc,
parsing .proto files itself, records json_name only where a .proto sets it, and the Python generator embeds the
descriptor as is, so the json_names are dropped where they equal the default (lowerCamelCase) name: the output is
byte for byte what `python -m grpc_tools.protoc -I protos ...` writes. (A .proto that sets json_name to its default
value explicitly would lose it; no proto here does.)
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from google.protobuf import descriptor_pb2
from google.protobuf.compiler import plugin_pb2
from grpc_tools import protoc


def _default_json_name(name: str) -> str:
    out, upper = [], False
    for ch in name:
        if ch == "_":
            upper = True
        elif upper:
            out.append(ch.upper())
            upper = False
        else:
            out.append(ch)
    return "".join(out)


def _strip_fields(fields) -> None:
    for field in fields:
        if field.HasField("json_name") and field.json_name == _default_json_name(field.name):
            field.ClearField("json_name")


def _strip_message(message: descriptor_pb2.DescriptorProto) -> None:
    _strip_fields(message.field)
    _strip_fields(message.extension)
    for nested in message.nested_type:
        _strip_message(nested)


def normalize(files: descriptor_pb2.FileDescriptorSet) -> descriptor_pb2.FileDescriptorSet:
    for file in files.file:
        _strip_fields(file.extension)
        for message in file.message_type:
            _strip_message(message)
    return files


def _run_protoc(args: list[str]) -> int:
    return protoc.main(["protoc", *args])


def protoc_main(args: list[str]) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        rewritten = []
        for arg in args:
            if arg.startswith("--descriptor_set_in="):
                paths = arg.split("=", 1)[1].split(os.pathsep)
                merged = descriptor_pb2.FileDescriptorSet()
                for path in paths:
                    data = sys.stdin.buffer.read() if path in ("/dev/stdin", "-") else Path(path).read_bytes()
                    merged.MergeFromString(data)
                fds = Path(tmp) / "image.binpb"
                fds.write_bytes(normalize(merged).SerializeToString())
                arg = f"--descriptor_set_in={fds}"
            rewritten.append(arg)
        return _run_protoc(rewritten)


def plugin_main(generator: str) -> int:
    request = plugin_pb2.CodeGeneratorRequest.FromString(sys.stdin.buffer.read())
    response = plugin_pb2.CodeGeneratorResponse()
    with tempfile.TemporaryDirectory() as tmp:
        fds = Path(tmp) / "image.binpb"
        fds.write_bytes(normalize(descriptor_pb2.FileDescriptorSet(file=request.proto_file)).SerializeToString())
        out = Path(tmp) / "out"
        out.mkdir()
        args = [f"--descriptor_set_in={fds}", f"--{generator}_out={out}"]
        if request.parameter:
            args.append(f"--{generator}_opt={request.parameter}")
        # protoc writes its errors to stderr, which buf shows.
        if _run_protoc([*args, *request.file_to_generate]) != 0:
            response.error = f"grpc_tools.protoc --{generator}_out failed"
        else:
            for path in sorted(p for p in out.rglob("*") if p.is_file()):
                response.file.add(name=path.relative_to(out).as_posix(), content=path.read_text())
    response.supported_features = plugin_pb2.CodeGeneratorResponse.FEATURE_PROTO3_OPTIONAL
    sys.stdout.buffer.write(response.SerializeToString())
    return 0


def main() -> int:
    mode, *args = sys.argv[1:]
    if mode == "protoc":
        return protoc_main(args)
    if mode == "plugin":
        return plugin_main(args[0])
    raise SystemExit(f"usage: {sys.argv[0]} protoc ARGS... | plugin GENERATOR")


if __name__ == "__main__":
    sys.exit(main())
