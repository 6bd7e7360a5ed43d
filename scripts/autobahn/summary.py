"""Summarises an Autobahn|Testsuite fuzzingclient report (reports/index.json).

Prints the case counts by behaviour and close behaviour, lists every case that is not OK,
and exits 1 if a case outside 12.* and 13.* (permessage-deflate) failed.
"""

import json
import sys
from collections import Counter

ORDER = ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED"]


def case_key(case_id):
    return [int(part) for part in case_id.split(".")]


def main(path):
    with open(path) as f:
        report = json.load(f)
    failed_outside = 0
    for agent, cases in sorted(report.items()):
        behaviours = Counter(c["behavior"] for c in cases.values())
        closes = Counter(c["behaviorClose"] for c in cases.values())
        print(f"agent {agent}: {len(cases)} cases")
        print("  behaviour:       " + ", ".join(f"{b} {behaviours[b]}" for b in ORDER if behaviours[b]))
        print("  close behaviour: " + ", ".join(f"{b} {closes[b]}" for b in ORDER if closes[b]))
        for case_id in sorted(cases, key=case_key):
            c = cases[case_id]
            if c["behavior"] == "OK" and c["behaviorClose"] == "OK":
                continue
            compression = case_id.split(".")[0] in ("12", "13")
            print(
                f"  {case_id:10} {c['behavior']:13} close {c['behaviorClose']:13} "
                f"{c.get('duration', 0):>6} ms  remote close code {c.get('remoteCloseCode')}"
                + ("  (compression)" if compression else "")
            )
            if not compression and "FAILED" in (c["behavior"], c["behaviorClose"]):
                failed_outside += 1
    if failed_outside:
        print(f"FAILED: {failed_outside} case(s) outside 12.* and 13.*")
        return 1
    print("no failed case outside 12.* and 13.*")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "target/autobahn/reports/index.json"))
