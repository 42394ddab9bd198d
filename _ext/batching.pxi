# Compiled send batching (included at the end of codec.pyx); written with the WebRTC transport.
