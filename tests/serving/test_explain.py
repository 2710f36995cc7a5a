"""Evidence, the template, the guard, and the OpenAI-compatible writer against a loopback endpoint."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import numpy as np
import pytest

from llmrec_platform.serving.explain import evidence, guard, openai_writer, template_text

IDS = np.array(["a", "b", "c", "d"], dtype=object)
TITLES = ["Alien (1979)", "Aliens (1986)", "Heat (1995)", "Up (2009)"]
GENRES = [["Horror", "Sci-Fi"], ["Action", "Sci-Fi"], ["Crime"], ["Animation"]]
VECTORS = np.array([[1, 0, 0], [0.8, 0.6, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float32)
COLLAB = np.array([[0, 0.5, 0.1, 0], [0.3, 0, 0.2, 0], [0.1, 0.6, 0, 0], [0, 0, 0, 0]], dtype=np.float32)


def test_evidence_is_drawn_from_the_history_only():
    found = evidence(1, np.array([0, 2, 3]), IDS, TITLES, GENRES, VECTORS, lambda p: COLLAB[p])
    # cosines to "Aliens": Alien 0.8, Heat 0.6, Up 0 (dropped: no similarity)
    assert [(link.item_id, link.similarity) for link in found.closest] == [("a", 0.8), ("c", 0.6)]
    # the weight *from* each history item to "Aliens" (COLLAB[h][1]: a 0.5, c 0.6, d 0), as x·B adds it up
    assert found.collaborative.item_id == "c" and found.collaborative.weight == pytest.approx(0.6)
    assert found.shared_genres == ["Sci-Fi"]
    assert template_text(found) == ("Because you liked “Alien (1979)” and “Heat (1995)”; it is Sci-Fi like much "
                                    "of your history.")  # the collaborative link is already named: not repeated
    alone = evidence(3, np.array([3]), IDS, TITLES, GENRES, VECTORS, None)
    assert alone.closest == [] and template_text(alone) == "Popular with people like you."


def test_guard_allows_only_titles_in_the_evidence():
    found = evidence(1, np.array([0, 2]), IDS, TITLES, GENRES, VECTORS, None)
    assert guard("Aliens (1986) continues Alien (1979), which you loved.", found, TITLES)
    assert not guard("Like Alien (1979), and unlike Up (2009) which you never saw.", found, TITLES)
    assert guard("Fans of Heat (1995) and Aliens (1986) will enjoy it, as will fans of up-tempo films.", found,
                 TITLES + ["Terminator, The (1984)"])
    assert not guard("If you liked Terminator, The (1984) you will like this.", found, TITLES + ["Terminator, The (1984)"])
    assert not guard("   ", found, TITLES)


class ChatEndpoint(BaseHTTPRequestHandler):
    reply = ""
    seen: list[dict] = []

    def do_POST(self):  # noqa: N802 (http.server's naming)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        ChatEndpoint.seen.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
        payload = json.dumps({"choices": [{"message": {"content": ChatEndpoint.reply}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


def test_openai_writer_calls_the_endpoint_and_the_guard_polices_it():
    server = HTTPServer(("127.0.0.1", 0), ChatEndpoint)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        write = openai_writer(f"http://127.0.0.1:{server.server_port}/v1", "tiny-model", "key-1", timeout=5)
        found = evidence(1, np.array([0, 2]), IDS, TITLES, GENRES, VECTORS, None)
        ChatEndpoint.reply = "Since you liked Alien (1979), Aliens (1986) is a natural next watch."
        text = write(found)
        assert text == ChatEndpoint.reply and guard(text, found, TITLES)
        ChatEndpoint.reply = "Watch Up (2009) instead."
        assert not guard(write(found), found, TITLES)
    finally:
        server.shutdown()
    request = ChatEndpoint.seen[0]
    assert request["path"] == "/v1/chat/completions" and request["auth"] == "Bearer key-1"
    assert request["body"]["model"] == "tiny-model" and "Aliens (1986)" in request["body"]["messages"][0]["content"]
