mod core_support;
use core_support::*;

#[test]
fn smoke() {
    let legs = Legs::small();
    let fs = legs.mount();
    let ino = new_file(&fs);
    let data = pattern(1, 10_000);
    assert_eq!(fs.write(ino, 0, &data).unwrap(), data.len());
    assert_eq!(read_all(&fs, ino), data);
    fs.unmount().unwrap();
    let fs = legs.mount();
    assert_eq!(read_all(&fs, ino), data);
    fs.unmount().unwrap();
}
