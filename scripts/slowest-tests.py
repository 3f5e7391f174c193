#!/usr/bin/env python3
"""Prints the ten slowest tests of JUnit reports (nextest's, pytest's):
scripts/slowest-tests.py REPORT.xml..."""
import sys
import xml.etree.ElementTree as ET

cases = []
for path in sys.argv[1:]:
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as e:
        print(f"  (cannot read {path}: {e})")
        continue
    run = path.rsplit("junit-", 1)[-1].removesuffix(".xml")
    for case in root.iter("testcase"):
        cases.append((float(case.get("time") or 0), run, f"{case.get('classname', '')} {case.get('name', '')}".strip()))
for seconds, run, name in sorted(cases, reverse=True)[:10]:
    print(f"{seconds:8.1f} s  [{run}] {name}")
