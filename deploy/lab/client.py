#!/usr/bin/env python3
"""The anycast lab's client (runs inside the lab's client namespace; stdlib only).

Every request opens a new TCP connection to the anycast address, so the router's L4 ECMP hash
may send it to either PoP; the simulated app echoes the connection's peer (the PoP's address)
and its own region and endpoint. A failed request (connect error, reset, 5xx) is retried on a
new connection up to --retries times (idempotent GETs, as a real client would); it counts as
failed only when every try failed.

  client.py spread URL N              N requests: JSON {"pops": {...}, "regions": {...}, "failed": n}
  client.py loop URL OUT [COOKIE]     requests every --gap until OUT.stop exists; one JSON line
                                      per request into OUT (t, pop, region, endpoint, tries, ok)
  client.py sticky URL POP            a sticky cookie issued through PoP POP: JSON {cookie, endpoint}
"""

import http.client
import json
import os
import sys
import time
import urllib.parse

POPS = {"10.1.0.2": "pop1", "10.2.0.2": "pop2"}


def once(url, cookie=None, timeout=2.0):
    """One GET on a new connection: (status, json body or None, set-cookie or None, error)."""
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=timeout)
    try:
        headers = {"Host": "app.example.com", "Connection": "close"}
        if cookie:
            headers["Cookie"] = cookie
        conn.request("GET", u.path or "/", headers=headers)
        resp = conn.getresponse()
        body = resp.read()
        try:
            doc = json.loads(body)
        except ValueError:
            doc = None
        return resp.status, doc, resp.getheader("set-cookie"), None
    except (OSError, http.client.HTTPException) as e:
        return None, None, None, type(e).__name__
    finally:
        conn.close()


def request(url, cookie=None, retries=3):
    """A GET retried on a new connection: a dict describing the outcome."""
    tries = 0
    errors = []
    while True:
        tries += 1
        status, doc, set_cookie, err = once(url, cookie)
        if status is not None and status < 500 and doc is not None:
            peer = (doc.get("peer") or "").rsplit(":", 1)[0]
            return {
                "ok": True, "tries": tries, "status": status, "pop": POPS.get(peer, peer),
                "region": doc.get("region"), "endpoint": doc.get("endpoint"),
                "set_cookie": set_cookie, "errors": errors,
            }
        errors.append(err or f"status {status}")
        if tries > retries:
            return {"ok": False, "tries": tries, "errors": errors}
        time.sleep(0.05)


def main():
    cmd = sys.argv[1]
    if cmd == "spread":
        url, n = sys.argv[2], int(sys.argv[3])
        pops, regions, failed = {}, {}, 0
        for _ in range(n):
            r = request(url)
            if r["ok"]:
                pops[r["pop"]] = pops.get(r["pop"], 0) + 1
                regions[r["region"]] = regions.get(r["region"], 0) + 1
            else:
                failed += 1
        print(json.dumps({"pops": pops, "regions": regions, "failed": failed}))
    elif cmd == "loop":
        url, out = sys.argv[2], sys.argv[3]
        cookie = sys.argv[4] if len(sys.argv) > 4 else None
        gap = float(os.environ.get("LAB_GAP", "0.02"))
        start = time.monotonic()
        deadline = start + float(os.environ.get("LAB_LOOP_MAX", "300"))
        with open(out, "w", buffering=1) as f:
            while not os.path.exists(out + ".stop") and time.monotonic() < deadline:
                t = time.time()
                r = request(url, cookie)
                r["t"] = t
                r.pop("set_cookie", None)
                f.write(json.dumps(r) + "\n")
                time.sleep(gap)
    elif cmd == "sticky":
        url, pop = sys.argv[2], sys.argv[3]
        for _ in range(200):
            r = request(url)
            if r["ok"] and r["pop"] == pop and r["set_cookie"]:
                cookie = r["set_cookie"].split(";", 1)[0]
                print(json.dumps({"cookie": cookie, "endpoint": r["endpoint"], "region": r["region"]}))
                return 0
        print(json.dumps({"error": f"no sticky cookie issued through {pop} in 200 tries"}))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
