//! The core pool.

use super::*;

#[test]
fn cores_are_recycled_with_a_new_epoch() {
    let core = Core::acquire(Config::default());
    let word = core.word();
    core.release();
    assert_eq!(state_of(core.word()), State::Disabled);
    // A straggler of the old breaker records nothing.
    let before = core.totals().successes;
    core.record_fast_success(word);
    assert_eq!(core.totals().successes, before);
    let again = Core::acquire(Config::default());
    if std::ptr::eq(again, core) {
        assert!(epoch_of(again.word()) > epoch_of(word));
    }
    again.release();
}
