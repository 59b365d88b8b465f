//! Zigzag varints (protobuf style), as Kafka's record format uses them.
