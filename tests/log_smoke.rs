use lmqfs::engine::{Log, LogConfig, NewRecord};

#[test]
fn smoke() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = LogConfig::default();
    config.segment_bytes = 4096;
    config.index_interval_bytes = 100;
    let log = Log::open(dir.path(), config.clone()).unwrap();
    for i in 0..1000 {
        let info = log.append(&[NewRecord::value(format!("v{i}"))]).unwrap();
        assert_eq!(info.first_offset, i);
    }
    assert!(log.segment_count() > 1, "{}", log.segment_count());
    for i in 0..1000 {
        let r = log.read_record(i).unwrap().unwrap();
        assert_eq!(r.value.unwrap(), format!("v{i}").into_bytes());
    }
    log.close().unwrap();
    drop(log);
    let log = Log::open(dir.path(), config.clone()).unwrap();
    assert_eq!(log.log_end_offset(), 1000);
    for i in 0..1000 {
        let r = log.read_record(i).unwrap().unwrap();
        assert_eq!(r.value.unwrap(), format!("v{i}").into_bytes());
    }
    log.append(&[NewRecord::value("x")]).unwrap();
    drop(log); // crash
    let log = Log::open(dir.path(), config).unwrap();
    assert_eq!(log.log_end_offset(), 1001);
}
