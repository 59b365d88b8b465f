//! `lmqfs dump-log`: print and verify segment files, like Kafka's `kafka-dump-log.sh`.
