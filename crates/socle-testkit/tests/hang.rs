//! A test that hangs on purpose, for scripts/test.sh to check that nextest
//! ends a hung test as a timeout, by name, within its bound
//! (.config/nextest.toml gives this test a bound of 10 s).

#[test]
#[ignore = "hangs on purpose: scripts/test.sh runs it with SOCLE_TEST_HANG=1 and expects a timeout"]
fn a_deliberately_hanging_test_fails_within_its_bound() {
    assert!(std::env::var_os("SOCLE_TEST_HANG").is_some(), "set SOCLE_TEST_HANG=1 to run this test: it hangs");
    loop {
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}
