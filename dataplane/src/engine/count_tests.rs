//! Instruction count of the request path (run under callgrind; ignored).

use super::rig::{key_in, Rig};
use crate::routing::SlotRoute;

#[test]
#[ignore]
fn count_get_p16() {
    let mut r = Rig::new(SlotRoute::Stable(2));
    let k = key_in(3);
    let one = format!("*2\r\n$3\r\nGET\r\n${}\r\n{k}\r\n", k.len());
    let batch = one.repeat(16);
    let reply = "$1\r\nv\r\n".repeat(16);
    for _ in 0..20000 {
        r.send_raw(batch.as_bytes());
        r.written(2);
        r.reply(2, &reply);
        assert_eq!(r.output().len(), reply.len());
    }
}
