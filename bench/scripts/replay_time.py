import socket, sys, time, statistics
host, port, user, last_id, want, runs = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5]), int(sys.argv[6])
times = []
for _ in range(runs):
    t0 = time.perf_counter()
    s = socket.create_connection((host, port))
    s.sendall(f"GET /events/{user} HTTP/1.1\r\nHost: x\r\nLast-Event-ID: {last_id}\r\n\r\n".encode())
    buf = b""
    while buf.count(b"\nid: ") + buf.startswith(b"id: ") < want:
        chunk = s.recv(65536)
        if not chunk: break
        buf += chunk
    times.append((time.perf_counter() - t0) * 1000)
    s.close()
times.sort()
print(f"replay of {want} events: p50 {statistics.median(times):.2f} ms, p90 {times[int(len(times)*0.9)]:.2f} ms over {runs} runs")
