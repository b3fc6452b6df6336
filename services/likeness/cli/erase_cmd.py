"""`likeness erase subject|tenant`: erase everything derived from a person's photos, printing the receipt."""

from __future__ import annotations

import argparse
import json

from google.protobuf.json_format import MessageToDict

from likeness.cli.common import add_address_argument, connect


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "erase",
        help="erase a subject (its photos and everything derived from them) or a whole tenant; prints the receipt",
    )
    scopes = parser.add_subparsers(dest="erase_scope", metavar="SCOPE", required=True)
    subject = scopes.add_parser("subject", help="erase one subject, named by any id of its lineage")
    named = subject.add_mutually_exclusive_group(required=True)
    named.add_argument("--dataset-id", default="", help="the dataset of the subject's photos")
    named.add_argument("--job-id", default="", help="a training job that trained on them")
    named.add_argument("--model-id", default="", help="a subject model trained from them")
    subject.set_defaults(func=run_subject)
    tenant = scopes.add_parser("tenant", help="erase every subject, gallery entry, file and key of a tenant (admin)")
    tenant.add_argument("tenant", help="the tenant's name")
    tenant.add_argument("--yes", action="store_true", help="confirm: this cannot be undone")
    tenant.set_defaults(func=run_tenant)
    for sub in (subject, tenant):
        add_address_argument(sub)


def _print(receipt) -> None:
    print(json.dumps(MessageToDict(receipt, preserving_proto_field_name=True), indent=2))


def run_subject(args: argparse.Namespace) -> int:
    with connect(args) as client:
        _print(client.erase_subject(dataset_id=args.dataset_id, job_id=args.job_id, model_id=args.model_id))
    return 0


def run_tenant(args: argparse.Namespace) -> int:
    if not args.yes:
        print(f"erasing tenant {args.tenant!r} cannot be undone; run again with --yes")
        return 2
    with connect(args) as client:
        _print(client.erase_tenant(args.tenant))
    return 0
