"""`complai ropa`: records of processing activities (GDPR Art. 30) as JSON and CSV."""

from __future__ import annotations

import json

from complai.cli.common import ForceOpt, console, open_session, print_json, protected_paths
from complai.cli.options import RopaFormatOpt, RopaJsonOutOpt, RopaOutOpt
from complai.compliance.ropa import to_csv
from complai.errors import InvalidInput
from complai.files import check_outputs, output_dir, write_private


def ropa(
    out: RopaOutOpt = None,
    format_: RopaFormatOpt = "json,csv",
    json_out: RopaJsonOutOpt = False,
    force: ForceOpt = False,
) -> None:
    """Generate the records of processing from the datasets' declarations and the sharing agreements."""
    formats = {f.strip() for f in format_.split(",") if f.strip()}
    if not formats <= {"json", "csv"}:
        raise InvalidInput("--format takes json and/or csv")
    protected = protected_paths()
    names = [f"ropa.{f}" for f in ("json", "csv") if f in formats]
    if out is not None:
        check_outputs(out, names, force=force, forbidden=protected)
    with open_session("audit") as (_, session):
        recs = session.records_of_processing()
    if out is not None:
        output_dir(out, forbidden=protected)
        if "json" in formats:
            write_private(out / "ropa.json", json.dumps(recs, indent=1), force=force, forbidden=protected)
        if "csv" in formats:
            write_private(out / "ropa.csv", to_csv(recs), force=force, forbidden=protected)
    if json_out:
        print_json(recs)
    else:
        for r in recs:
            console.print(f"{r['dataset']} / {r['purpose']}: {r['lawful_basis']}; retention {r['retention']}")
