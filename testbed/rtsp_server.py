"""A real RTSP server for the tests: GStreamer's (Debian's gir1.2-gst-rtsp-server-1.0), run by the system Python.

``/usr/bin/python3 testbed/rtsp_server.py PORT RECORDING.wav`` serves ``rtsp://127.0.0.1:PORT/live``: the
recording as 16-bit PCM over RTP, each client from its start (a camera or a recorder's RTSP output). ffmpeg
cannot serve RTSP to a pulling client, so the tests' RTSP source is this. It runs until killed.
"""

import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def main() -> None:
    port, recording = sys.argv[1], sys.argv[2]
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(port)
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(f'( filesrc location="{recording}" ! wavparse ! audioconvert ! audioresample ! '
                       "audio/x-raw,rate=16000,channels=1 ! rtpL16pay name=pay0 pt=96 )")
    server.get_mount_points().add_factory("/live", factory)
    server.attach(None)
    print("ready", flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main()
