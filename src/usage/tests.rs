use super::*;

fn one(refused: bool) -> Counts {
    Counts::request(refused, 10, 100)
}

const T: u64 = 1_800_000_000;

#[test]
fn a_request_counts_in_the_minute_the_hour_and_the_day() {
    let u = Usage::new();
    u.record(By::License, "lic-a", T, &one(false));
    u.record(By::License, "lic-a", T + 1, &one(true));
    let e = u.entries(By::License, T + 2);
    assert_eq!(e.len(), 1);
    let want = Counts {
        requests: 2,
        refusals: 1,
        bytes_in: 20,
        bytes_out: 200,
    };
    assert_eq!((e[0].minute, e[0].hour, e[0].day), (want, want, want));
    assert!(
        u.entries(By::Client, T + 2).is_empty(),
        "kinds are kept apart"
    );
}

#[test]
fn each_window_lets_go_of_what_is_older_than_it() {
    let u = Usage::new();
    u.record(By::Client, "c", T, &one(false));
    let at = |dt: u64| u.entries(By::Client, T + dt);
    assert_eq!(at(30)[0].minute.requests, 1);
    assert_eq!(at(120)[0].minute.requests, 0, "gone from the minute");
    assert_eq!(at(120)[0].hour.requests, 1);
    assert_eq!(at(2 * 3600)[0].hour.requests, 0, "gone from the hour");
    assert_eq!(at(2 * 3600)[0].day.requests, 1);
    assert!(
        at(25 * 3600).is_empty(),
        "a caller silent for a day is not listed"
    );
}

#[test]
fn a_reused_bucket_starts_over_rather_than_adding_to_an_old_interval() {
    let u = Usage::new();
    u.record(By::License, "l", T, &one(false));
    // Six ten-second buckets later the same slot of the minute ring holds a new interval.
    u.record(By::License, "l", T + 60, &one(false));
    let e = u.entries(By::License, T + 60);
    assert_eq!(e[0].minute.requests, 1);
    assert_eq!(e[0].hour.requests, 2);
}

#[test]
fn a_clock_stepped_back_reads_no_future_bucket() {
    let u = Usage::new();
    u.record(By::License, "l", T + 3600, &one(false));
    let e = u.entries(By::License, T + 3600);
    assert_eq!(e[0].day.requests, 1);
    assert!(u.entries(By::License, T).is_empty());
}

#[test]
fn the_table_is_bounded_and_callers_past_it_are_counted_not_stored() {
    let u = Usage::new();
    for i in 0..MAX_KEYS {
        u.record(By::Client, &format!("c{i}"), T, &one(false));
    }
    u.record(By::Client, "one-too-many", T + 1, &one(false));
    assert_eq!(u.untracked(By::Client), 1);
    assert_eq!(u.entries(By::Client, T + 1).len(), MAX_KEYS);
    // A day later the silent callers make room.
    u.record(By::Client, "newcomer", T + 24 * 3600 + 1, &one(false));
    let e = u.entries(By::Client, T + 24 * 3600 + 1);
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].key, "newcomer");
}

#[test]
fn entries_are_busiest_first_then_by_name() {
    let u = Usage::new();
    u.record(By::License, "b", T, &one(false));
    u.record(By::License, "a", T, &one(false));
    u.record(By::License, "c", T, &one(false));
    u.record(By::License, "c", T, &one(false));
    let keys: Vec<String> = u
        .entries(By::License, T)
        .into_iter()
        .map(|e| e.key)
        .collect();
    assert_eq!(keys, ["c", "a", "b"]);
}

#[test]
fn only_license_and_client_are_kinds() {
    assert_eq!(By::parse("license"), Some(By::License));
    assert_eq!(By::parse("client"), Some(By::Client));
    assert_eq!(By::parse("ip"), None);
    assert_eq!(By::Client.label(), "client");
}
