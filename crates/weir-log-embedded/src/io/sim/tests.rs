use super::*;

fn file(disk: &SimDisk, path: &str, access: Access) -> Box<dyn IoFile> {
    disk.open(Path::new(path), access).expect("open")
}

fn exists(disk: &SimDisk, path: &str) -> bool {
    disk.metadata(Path::new(path)).is_ok()
}

fn read(disk: &SimDisk, path: &str) -> Vec<u8> {
    disk.read(Path::new(path)).expect("read")
}

/// `/d/f` holding `bytes`, durable, name and all.
fn durable_file(bytes: &[u8]) -> SimDisk {
    let disk = SimDisk::new();
    disk.create_dir(Path::new("/d")).expect("mkdir");
    disk.sync_dir(Path::new("/")).expect("fsync /");
    let f = file(&disk, "/d/f", Access::CreateNew);
    f.write_all_at(bytes, 0).expect("write");
    f.sync_data().expect("sync");
    disk.sync_dir(Path::new("/d")).expect("fsync /d");
    disk
}

#[test]
fn a_new_file_needs_its_directory_fsynced_and_its_bytes_synced() {
    let disk = SimDisk::new();
    disk.create_dir(Path::new("/d")).expect("mkdir");
    let f = file(&disk, "/d/f", Access::CreateNew);
    f.write_all_at(b"hello", 0).expect("write");
    f.sync_data().expect("sync");
    assert_eq!(read(&disk, "/d/f"), b"hello", "reads see the page cache");
    let after = disk.crash_image(CutMode::DropUnsynced, 0);
    assert!(
        !exists(&after, "/d"),
        "the directory's entry was never fsynced"
    );

    disk.sync_dir(Path::new("/")).expect("fsync /");
    let after = disk.crash_image(CutMode::DropUnsynced, 0);
    assert!(exists(&after, "/d") && !exists(&after, "/d/f"));

    disk.sync_dir(Path::new("/d")).expect("fsync /d");
    f.write_all_at(b" world", 5).expect("write");
    let after = disk.crash_image(CutMode::DropUnsynced, 0);
    assert_eq!(read(&after, "/d/f"), b"hello", "the unsynced write is gone");
    let after = disk.crash_image(CutMode::KeepAll, 0);
    assert_eq!(read(&after, "/d/f"), b"hello world");
}

#[test]
fn a_torn_cut_keeps_sectors_of_unsynced_writes_at_random() {
    let old = vec![b'o'; 4 * SECTOR as usize];
    let disk = durable_file(&old);
    let f = file(&disk, "/d/f", Access::ReadWrite);
    // Two unsynced writes over the same sectors, the second one also past the end.
    f.write_all_at(&vec![b'a'; 3 * SECTOR as usize], 0)
        .expect("write");
    f.write_all_at(&vec![b'b'; 3 * SECTOR as usize], 2 * SECTOR)
        .expect("write");
    let mut seen = BTreeSet::new();
    for seed in 0..200 {
        let bytes = read(&disk.crash_image(CutMode::Torn, seed), "/d/f");
        assert!(bytes.len() == 4 * SECTOR as usize || bytes.len() == 5 * SECTOR as usize);
        let sectors: Vec<u8> = bytes.chunks(SECTOR as usize).map(|s| s[0]).collect();
        for (sector, chunk) in bytes.chunks(SECTOR as usize).enumerate() {
            assert!(
                chunk.iter().all(|&b| b == chunk[0]),
                "a sector is one write's"
            );
            let allowed: &[u8] = match sector {
                0 | 1 => b"oa",
                2 => b"oab",
                3 => b"ob",
                _ => b"b",
            };
            assert!(allowed.contains(&chunk[0]), "sector {sector}: {sectors:?}");
        }
        seen.insert(sectors);
    }
    assert!(
        seen.iter().any(|s| s[2] == b'a'),
        "an older write's sector survives a newer one's"
    );
    assert!(seen.len() > 20, "the seed decides: {} images", seen.len());
    assert_eq!(
        read(&disk.crash_image(CutMode::Torn, 7), "/d/f"),
        read(&disk.crash_image(CutMode::Torn, 7), "/d/f"),
        "the same seed, the same image"
    );
}

#[test]
fn a_rename_is_durable_only_once_its_directory_is_fsynced() {
    let disk = durable_file(b"old");
    let tmp = file(&disk, "/d/f.tmp", Access::Truncate);
    tmp.write_all_at(b"new", 0).expect("write");
    tmp.sync_all().expect("sync");
    disk.rename(Path::new("/d/f.tmp"), Path::new("/d/f"))
        .expect("rename");
    assert_eq!(read(&disk, "/d/f"), b"new");
    let after = disk.crash_image(CutMode::DropUnsynced, 0);
    assert_eq!(read(&after, "/d/f"), b"old");
    assert!(!exists(&after, "/d/f.tmp"));
    let mut outcomes = BTreeSet::new();
    for seed in 0..50 {
        let after = disk.crash_image(CutMode::Torn, seed);
        outcomes.insert((read(&after, "/d/f"), exists(&after, "/d/f.tmp")));
    }
    assert!(outcomes.contains(&(b"old".to_vec(), false)));
    assert!(outcomes.contains(&(b"new".to_vec(), false)));
    disk.sync_dir(Path::new("/d")).expect("fsync");
    let after = disk.crash_image(CutMode::DropUnsynced, 0);
    assert_eq!(read(&after, "/d/f"), b"new");
}

#[test]
fn a_removal_is_durable_only_once_its_directory_is_fsynced() {
    let disk = durable_file(b"gone");
    disk.remove_file(Path::new("/d/f")).expect("remove");
    assert!(!exists(&disk, "/d/f"));
    let after = disk.crash_image(CutMode::DropUnsynced, 0);
    assert_eq!(read(&after, "/d/f"), b"gone", "the file comes back");
    disk.sync_dir(Path::new("/d")).expect("fsync");
    assert!(!exists(&disk.crash_image(CutMode::DropUnsynced, 0), "/d/f"));
}

#[test]
fn a_failed_sync_forgets_the_writes_it_was_to_make_durable() {
    let disk = durable_file(b"0123");
    let f = file(&disk, "/d/f", Access::ReadWrite);
    f.write_all_at(b"xy", 0).expect("write");
    disk.inject(Fault::next(FaultOn::Sync, io::ErrorKind::Other));
    f.sync_data().expect_err("injected");
    assert_eq!(read(&disk, "/d/f"), b"xy23", "the page cache still has it");
    f.sync_data().expect("a retry reports success");
    let after = disk.crash_image(CutMode::DropUnsynced, 0);
    assert_eq!(
        read(&after, "/d/f"),
        b"0123",
        "but the write never reached the disk"
    );
}

#[test]
fn an_injected_full_disk_writes_half_and_fails_with_storage_full() {
    let disk = durable_file(b"");
    let f = file(&disk, "/d/f", Access::ReadWrite);
    disk.inject(Fault {
        on: FaultOn::Write,
        skip: 1,
        error: io::ErrorKind::StorageFull,
        under: Some("/d".into()),
    });
    f.write_all_at(b"ok", 0).expect("the first write passes");
    let error = f.write_all_at(b"abcd", 2).expect_err("the second fails");
    assert_eq!(error.kind(), io::ErrorKind::StorageFull);
    assert_eq!(read(&disk, "/d/f"), b"okab");
    f.write_all_at(b"cd", 4).expect("one-shot");
}

#[test]
fn after_a_power_failure_every_operation_fails_and_the_image_is_of_that_moment() {
    let disk = durable_file(b"");
    let f = file(&disk, "/d/f", Access::ReadWrite);
    disk.fail_power_after(2);
    f.write_all_at(b"a", 0).expect("write");
    f.sync_data().expect("sync");
    f.write_all_at(b"b", 1).expect_err("the power is gone");
    assert!(!disk.is_powered());
    disk.read(Path::new("/d/f")).expect_err("reads too");
    let after = disk.power_cut(CutMode::KeepAll, 0);
    assert_eq!(read(&after, "/d/f"), b"a");
    let f = file(&after, "/d/f", Access::ReadWrite);
    f.write_all_at(b"c", 1).expect("the new disk works");
}

#[test]
fn a_lock_is_held_until_its_handle_is_dropped() {
    let disk = durable_file(b"");
    let first = file(&disk, "/d/f", Access::Create);
    first.try_lock().expect("lock");
    let second = file(&disk, "/d/f", Access::Create);
    assert!(matches!(second.try_lock(), Err(TryLockError::WouldBlock)));
    drop(first);
    second.try_lock().expect("free again");
}

#[test]
fn directories_behave_like_posix_ones() {
    let disk = SimDisk::new();
    disk.create_dir(Path::new("/a")).expect("mkdir");
    let error = disk.create_dir(Path::new("/a")).expect_err("exists");
    assert_eq!(error.kind(), io::ErrorKind::AlreadyExists);
    let error = disk.create_dir(Path::new("/x/y")).expect_err("no parent");
    assert_eq!(error.kind(), io::ErrorKind::NotFound);
    file(&disk, "/a/f", Access::Create);
    let error = disk.remove_dir(Path::new("/a")).expect_err("not empty");
    assert_eq!(error.kind(), io::ErrorKind::DirectoryNotEmpty);
    let error = disk
        .open(Path::new("/a/f"), Access::CreateNew)
        .expect_err("exists");
    assert_eq!(error.kind(), io::ErrorKind::AlreadyExists);
    let error = disk
        .open(Path::new("/a/g"), Access::ReadWrite)
        .expect_err("missing");
    assert_eq!(error.kind(), io::ErrorKind::NotFound);
    let mut buf = [0u8; 1];
    let error = file(&disk, "/a/f", Access::Read)
        .read_exact_at(&mut buf, 0)
        .expect_err("empty");
    assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
    assert_eq!(disk.read_dir(Path::new("/a")).expect("list"), ["f"]);
    assert!(disk.metadata(Path::new("/a")).expect("stat").is_dir);
}
