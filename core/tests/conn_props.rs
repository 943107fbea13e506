//! Property: any sequence of sends on any channels arrives identically, in order per channel,
//! whatever the re-chunking of the pipe.

mod conn_support;

use std::time::Duration;

use bytes::Bytes;
use cometmesh_core::conn::SendError;
use conn_support::*;
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    #[test]
    fn any_sends_are_received_identically(
        seed in any::<u64>(),
        sends in proptest::collection::vec((0usize..5, 0usize..3000, any::<u8>()), 0..40),
    ) {
        let chans: Vec<_> = channels().iter().map(|c| c.id).collect();
        let mut p = Pair::new(seed);
        p.establish();
        let mut expected = vec![Vec::new(); chans.len()];
        for (ci, len, fill) in sends {
            let msg = Bytes::from(vec![fill; len]);
            let mut pending = msg.clone();
            // A full queue hands the message back: let the pair run, then retry.
            loop {
                match p.a.send(p.now, chans[ci], pending) {
                    Ok(()) => break,
                    Err(SendError::Full(back)) => {
                        pending = back;
                        p.step();
                        p.advance(Duration::from_millis(100));
                    }
                    Err(e) => panic!("{e}"),
                }
            }
            expected[ci].push(msg);
        }
        let total: usize = expected.iter().map(Vec::len).sum();
        p.run_until(Duration::from_secs(30), |p| {
            chans.iter().map(|&c| p.received_b(c).len()).sum::<usize>() == total
        });
        for (ci, &ch) in chans.iter().enumerate() {
            prop_assert_eq!(&p.received_b(ch), &expected[ci]);
        }
        prop_assert!(closed(&p.events_b).is_none());
    }
}
