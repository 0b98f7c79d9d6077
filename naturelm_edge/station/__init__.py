"""The field station: a read-only web dashboard over an ``edge-run`` output folder, Prometheus metrics, MQTT.

On-device code: numpy, SQLite and small libraries (Pillow for spectrogram images, prometheus-client, paho-mqtt);
it reads the event store and never imports the commands, training or the escalation server.
"""
