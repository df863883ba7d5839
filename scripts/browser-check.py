"""Checks the dashboard's DOM (dumped by headless Chromium) against `purgeq status --json`."""
import html.parser
import json
import sys


class Dom(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.by_id, self.gauges, self.stack, self.rows, self.text = {}, [], [], {}, []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.by_id[a["id"]] = a
        if "gauge" in a.get("class", "").split():
            self.gauges.append(a)
        if tag == "table":
            self.stack.append(a.get("id"))
        if tag == "tr" and self.stack and self.stack[-1]:
            self.rows[self.stack[-1]] = self.rows.get(self.stack[-1], 0) + 1
        if tag == "img":
            fail("an <img> element exists: database text was parsed as HTML")

    def handle_endtag(self, tag):
        if tag == "table" and self.stack:
            self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def fail(msg):
    print("FAIL:", msg)
    sys.exit(1)


dom = Dom()
dom.feed(open(sys.argv[1], encoding="utf-8").read())
status = json.load(open(sys.argv[2], encoding="utf-8"))
text = "".join(dom.text)

if 'data-loaded="true"' not in open(sys.argv[1], encoding="utf-8").read():
    fail("the page never loaded its data")
totals = {s: 0 for s in ["queued", "running", "confirming", "succeeded", "failed", "cancelled"]}
for c in status["counts"]:
    totals[c["state"]] += c["count"]
shown = json.loads(dom.by_id["depth"]["data-counts"])
if shown != totals:
    fail(f"queue depth shows {shown}, status says {totals}")
finished = int(dom.by_id["hours"]["data-finished"])
if finished != totals["succeeded"] + totals["failed"]:
    fail(f"the 24 h chart shows {finished} finished, status says {totals['succeeded'] + totals['failed']}")
lanes = [l for l in status["lanes"] if l["quota_day"] is not None and l["surplus_day"] is not None]
want = sorted((l["quota_day"] - l["surplus_day"], l["surplus_day"]) for l in lanes)
got = sorted((int(g["data-used"]), int(g["data-left"])) for g in dom.gauges)
if want != got or not got:
    fail(f"quota gauges show {got}, status says {want}")
failed_rows = dom.rows.get("failed", 0) - 1  # the header row
want_failed = min(20, totals["failed"]) or 1  # an empty table shows one "none" row
if failed_rows != want_failed:
    fail(f"failed-jobs table has {failed_rows} rows, expected {want_failed}")
if dom.rows.get("calls", 0) < 2:
    fail("the recent-calls table is empty")
if "<img src=x onerror=alert(1)>" not in text:
    fail("the job tagged with markup is not shown as text in the recent-jobs table")
if dom.rows.get("recent", 0) - 1 != min(20, sum(totals.values())):
    fail(f"recent-jobs table has {dom.rows.get('recent', 0) - 1} rows")
print(f"OK: depth {totals}, {finished} finished in 24 h, gauges {got}, {failed_rows} failed rows")
