#!/usr/bin/env python3
"""eval/make_calib.py: writes the default calibration text for ./imatrix and ./quantize --imatrix.

Calibration text must never be evaluation text. The evaluations here are WikiText-2 test (./ppl),
ARC-Easy *validation* (./llm-eval arc) and the TinyStories excerpt (stories260K's ppl protocol), so
the calibration text is the ARC-Easy *test* split (2,376 questions, disjoint from validation), each
written as "Question: ...\nAnswer: <the correct choice>\n\n" in file order.
usage: python3 eval/make_calib.py ../shared/data/text/eval/arc_easy_test.json OUT.txt
"""
import json
import os
import sys


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: make_calib.py ARC_EASY_TEST.json OUT.txt")
    src, out = sys.argv[1], sys.argv[2]
    with open(src, encoding="utf-8") as f:
        items = json.load(f)
    parts = []
    for it in items:
        ch = it["choices"]
        if it["answerKey"] not in ch["label"]:
            sys.exit(f"make_calib.py: {it['id']}: answer key {it['answerKey']!r} not among the labels")
        ans = ch["text"][ch["label"].index(it["answerKey"])]
        parts.append(f"Question: {it['question'].strip()}\nAnswer: {ans.strip()}\n\n")
    tmp = out + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("".join(parts))
    os.replace(tmp, out)   # never a partial file at OUT
    print(f"{out}: {len(items)} questions, {sum(map(len, parts))} characters")


if __name__ == "__main__":
    main()
