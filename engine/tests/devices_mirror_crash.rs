//! Fault-injecting and recording devices stacked as a mirror set's legs
//! would be in a crash test: FaultDevice over RecordingDevice over MemDevice,
//! one stack per leg, each leg with its own log and crash cut.

use keelfs_engine::device::{
    CrashPoint, Device, Fault, FaultDevice, FaultRule, MemDevice, Op, RecordingDevice, SECTOR,
};
use keelfs_engine::DeviceError;
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::sync::Arc;

const SIZE: u64 = 64 * 1024;
const BLOCK: usize = 4096;

struct Leg {
    mem: Arc<MemDevice>,
    rec: Arc<RecordingDevice>,
    dev: FaultDevice,
}

fn leg(name: &str) -> Leg {
    let mem = Arc::new(MemDevice::new(name, SIZE));
    let rec = Arc::new(RecordingDevice::new(mem.clone()).unwrap());
    let dev = FaultDevice::new(rec.clone());
    Leg { mem, rec, dev }
}

/// Write `buf` to every leg, as the mirror layer would; one result per leg.
fn mirror_write(legs: &[Leg], offset: u64, buf: &[u8]) -> Vec<bool> {
    legs.iter()
        .map(|l| l.dev.write_at(offset, buf).is_ok())
        .collect()
}

fn mirror_flush_and_mark(legs: &[Leg], mark: &str) {
    for l in legs {
        l.dev.flush().unwrap();
        l.rec.mark(mark);
    }
}

#[test]
fn legs_of_a_mirror_set_are_cut_independently() {
    let legs = [leg("leg0"), leg("leg1")];
    let (old, new) = (vec![b'o'; BLOCK], vec![b'n'; BLOCK]);
    mirror_write(&legs, 0, &old);
    mirror_flush_and_mark(&legs, "fsync 1 returned");
    mirror_write(&legs, 0, &new);
    mirror_write(&legs, 8 * BLOCK as u64, &new);
    for l in &legs {
        l.rec.mark("power cut");
    }

    let mut rng = StdRng::seed_from_u64(1);
    let mut block0_states = Vec::new();
    for l in &legs {
        let cut = l.rec.find_mark("power cut").unwrap();
        let points = l.rec.crash_points_at(cut, &mut rng, 64).unwrap();
        let images: Vec<Vec<u8>> = points
            .iter()
            .map(|p| l.rec.crash_image_at(p).unwrap())
            .collect();
        // Every sector of block 0 holds its old or its new content, never
        // anything else; the flushed write is never lost.
        for (p, image) in points.iter().zip(&images) {
            for sector in image[..BLOCK].chunks(SECTOR as usize) {
                assert!(
                    sector == &old[..SECTOR as usize] || sector == &new[..SECTOR as usize],
                    "{}: {p}",
                    l.mem.name()
                );
            }
        }
        block0_states.push(
            images
                .iter()
                .map(|i| i[..BLOCK] == new[..])
                .collect::<Vec<bool>>(),
        );
    }
    // Each leg can be left with either version independently, so one leg may
    // hold the new block while the other holds the old: the legs diverge.
    for states in &block0_states {
        assert!(states.contains(&true) && states.contains(&false));
    }
}

#[test]
fn a_dead_leg_records_nothing_and_a_dropped_write_never_reaches_the_log() {
    let legs = [leg("leg0"), leg("leg1")];
    mirror_write(&legs, 0, &[1; BLOCK]);
    mirror_flush_and_mark(&legs, "first commit");

    legs[1].dev.kill();
    let dropped = legs[0]
        .dev
        .add_rule(FaultRule::new(Op::Write, Fault::Drop).times(1))
        .unwrap();
    assert_eq!(mirror_write(&legs, 0, &[2; BLOCK]), [true, false]);
    assert!(matches!(
        legs[1].dev.flush(),
        Err(DeviceError::Injected { op: "flush", .. })
    ));
    assert_eq!(legs[0].dev.fired(dropped), Some(1));
    // leg1's log stops where it died; leg0's never saw the dropped write.
    assert_eq!(legs[1].rec.len(), 3);
    assert_eq!(legs[0].rec.len(), 3);
    // Even with everything kept, leg0's image holds the durable block only.
    let everything = legs[0].rec.unflushed_writes(3).unwrap();
    assert!(everything.is_empty());
    assert_eq!(
        legs[0].rec.crash_image(3, &everything).unwrap(),
        legs[0].mem.snapshot()
    );
    assert_eq!(legs[0].mem.peek(0, BLOCK), vec![1; BLOCK]);

    // The leg comes back and is resynced; recording carries on.
    legs[1].dev.revive();
    legs[1].dev.write_at(0, &[2; BLOCK]).unwrap();
    assert_eq!(
        legs[1].rec.unflushed_writes(legs[1].rec.len()).unwrap(),
        vec![3]
    );
}

#[test]
fn a_printed_crash_point_rebuilds_the_same_device() {
    let l = leg("leg0");
    for i in 0..6u8 {
        l.dev.write_at(u64::from(i % 3) * 1024, &[i; 2048]).unwrap();
        if i == 2 {
            l.dev.flush().unwrap();
        }
    }
    let points = l.rec.crash_points(&mut StdRng::seed_from_u64(7), 50);
    let torn = points
        .iter()
        .find(|p| !p.torn.is_empty() && p.keep.len() > 1)
        .expect("a torn, reordered point");
    let reproducer = torn.to_string();
    let parsed = CrashPoint::parse(&reproducer).unwrap();
    assert_eq!(&parsed, torn);
    let original = l.rec.materialise(torn).unwrap();
    let rebuilt = l.rec.materialise(&parsed).unwrap();
    assert_eq!(original.snapshot(), rebuilt.snapshot());
    assert_ne!(rebuilt.snapshot(), l.mem.snapshot(), "{reproducer}");
}
