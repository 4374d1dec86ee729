#!/usr/bin/env python3
# RSS per idle client connection of one kind, for the figures in README's *Connection memory*:
# starts a simulated region (`loadtest region`) and the gateway (one worker, a plaintext and a
# TLS listener with the certificate `c.pem`/`k.pem` in the working directory), opens N clients
# of KIND one after the other and holds them idle for 3 s, then prints the gateway's RSS growth
# per client and `/status` admission counts. KIND: h1 (one GET, then idle), tls-h1, h2c and
# tls-h2 (the preface and SETTINGS, no stream). Loopback only; stops what it started.
#
#   scripts/idle_memory.py KIND N GATEWAY_BIN LOADTEST_BIN
#   (a throwaway certificate: openssl req -x509 -newkey rsa:2048 -nodes -keyout k.pem -out c.pem
#    -days 2 -subj /CN=mem.test)
# RSS per idle client connection of one kind (plain h1, TLS h1, h2c no stream, TLS h2 no stream)
import json, os, socket, ssl, subprocess, sys, time, http.client
kind, n, gw_bin, region_bin = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
def free():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p
app, listen, tls, admin = free(), free(), free(), free()
reg = subprocess.Popen([region_bin, "region", "--name", "fra", "--listen", f"127.0.0.1:{app}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
open("gw.yaml", "w").write(f"""listeners:
  - {{ name: http, bind: "127.0.0.1:{listen}" }}
  - {{ name: https, bind: "127.0.0.1:{tls}", tls: {{ certs: [{{ cert: c.pem, key: k.pem }}] }} }}
admin: {{ bind: "127.0.0.1:{admin}" }}
server: {{ threads: 1 }}
regions:
  fra:
    endpoints: [{{ id: fra-1, address: "127.0.0.1:{app}" }}]
routes:
  - {{ name: app, regions: [fra] }}
""")
gw = subprocess.Popen([gw_bin, "run", "--config", "gw.yaml"], stdout=subprocess.DEVNULL, stderr=open("gw.log", "w"))
try:
    for _ in range(240):
        try:
            c = http.client.HTTPConnection("127.0.0.1", admin, timeout=2); c.request("GET", "/readyz")
            if c.getresponse().status == 200: break
        except OSError: pass
        time.sleep(0.25)
    def rss():
        return int([l for l in open(f"/proc/{gw.pid}/status") if l.startswith("VmRSS")][0].split()[1])
    time.sleep(1)
    before = rss()
    ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
    held = []
    for i in range(n):
        if kind.startswith("tls"):
            ctx.set_alpn_protocols(["h2"] if kind == "tls-h2" else ["http/1.1"])
            s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", tls)), server_hostname="mem.test")
        else:
            s = socket.create_connection(("127.0.0.1", listen))
        if kind in ("h1", "tls-h1"):
            s.sendall(b"GET /bench HTTP/1.1\r\nHost: a\r\n\r\n")
            buf = b""
            while b"\r\n\r\n" not in buf: buf += s.recv(4096)
        else:
            # HTTP/2 with no stream: the preface and an empty SETTINGS frame; wait for the server's.
            s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
            s.recv(4096)
        held.append(s)
    time.sleep(3)
    after = rss()
    c = http.client.HTTPConnection("127.0.0.1", admin, timeout=5); c.request("GET", "/status")
    adm = json.loads(c.getresponse().read())["admission"]
    print(f"{kind}: {n} clients, RSS {before/1024:.1f} -> {after/1024:.1f} MiB, {(after-before)/n:.2f} KiB per client; connections {adm['connections']}, parked {adm['parked']}")
finally:
    gw.terminate(); reg.terminate(); gw.wait(); reg.wait()
