use super::*;

const POLICY: HealthPolicy = HealthPolicy {
    rise: 2,
    fall: 3,
    consecutive_failures: Some(3),
    ejection: Duration::from_secs(5),
    max_ejection: Duration::from_secs(60),
};

fn step(state: &mut EndpointState, ok: bool) -> Option<Transition> {
    state.on_probe(ok, Instant::now(), &POLICY)
}

#[tokio::test(start_paused = true)]
async fn first_probe_decides_immediately() {
    let mut up = EndpointState::new();
    assert_eq!(up.health(), Health::Unknown);
    assert!(up.health().routable());
    assert_eq!(
        step(&mut up, true),
        Some(Transition {
            from: Health::Unknown,
            to: Health::Up,
            cause: Cause::FirstProbe
        })
    );
    let mut down = EndpointState::new();
    assert_eq!(step(&mut down, false).map(|t| t.to), Some(Health::Down));
    assert!(!down.health().routable());
}

#[tokio::test(start_paused = true)]
async fn fall_and_rise_need_consecutive_results() {
    let mut s = EndpointState::new();
    step(&mut s, true);
    assert_eq!(step(&mut s, false), None);
    assert_eq!(step(&mut s, false), None);
    assert_eq!(
        step(&mut s, true),
        None,
        "a success resets the failure streak"
    );
    assert_eq!(step(&mut s, false), None);
    assert_eq!(step(&mut s, false), None);
    assert_eq!(
        step(&mut s, false).map(|t| (t.to, t.cause)),
        Some((Health::Down, Cause::ProbesFailed))
    );
    assert_eq!(step(&mut s, false), None, "already down");
    assert_eq!(step(&mut s, true), None);
    assert_eq!(
        step(&mut s, false),
        None,
        "a failure resets the success streak"
    );
    assert_eq!(step(&mut s, true), None);
    assert_eq!(
        step(&mut s, true).map(|t| (t.to, t.cause)),
        Some((Health::Up, Cause::ProbesPassed))
    );
}

#[tokio::test(start_paused = true)]
async fn flapping_every_other_probe_never_rises() {
    let mut s = EndpointState::new();
    step(&mut s, false);
    for _ in 0..50 {
        assert_eq!(step(&mut s, true), None);
        assert_eq!(step(&mut s, false), None);
        assert_eq!(s.health(), Health::Down);
    }
}

#[tokio::test(start_paused = true)]
async fn passive_failures_eject_and_probes_readmit_after_the_ejection() {
    let mut s = EndpointState::new();
    step(&mut s, true);
    let now = Instant::now();
    assert_eq!(s.on_traffic(false, now, &POLICY), None);
    assert_eq!(
        s.on_traffic(true, now, &POLICY),
        None,
        "a success resets the streak"
    );
    s.on_traffic(false, now, &POLICY);
    s.on_traffic(false, now, &POLICY);
    let t = s.on_traffic(false, now, &POLICY).expect("ejected");
    assert_eq!(
        (t.to, t.cause),
        (Health::Down, Cause::Ejected(Duration::from_secs(5)))
    );
    assert_eq!(s.first_failure(), Some(now));

    // Probes pass during the ejection: they do not count.
    for _ in 0..10 {
        tokio::time::advance(Duration::from_millis(400)).await;
        assert_eq!(step(&mut s, true), None);
    }
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(step(&mut s, true), None, "first success after the ejection");
    assert_eq!(
        step(&mut s, true).map(|t| t.to),
        Some(Health::Up),
        "rise = 2"
    );
}

#[tokio::test(start_paused = true)]
async fn ejection_doubles_up_to_the_cap_and_resets_after_stability() {
    let mut s = EndpointState::new();
    step(&mut s, true);
    let mut durations = Vec::new();
    for _ in 0..6 {
        let now = Instant::now();
        let mut t = None;
        for _ in 0..3 {
            t = t.or(s.on_traffic(false, now, &POLICY));
        }
        let Some(Transition {
            cause: Cause::Ejected(d),
            ..
        }) = t
        else {
            panic!("not ejected: {t:?}")
        };
        durations.push(d.as_secs());
        tokio::time::advance(d).await;
        step(&mut s, true);
        step(&mut s, true);
        assert_eq!(s.health(), Health::Up);
    }
    assert_eq!(durations, [5, 10, 20, 40, 60, 60]);

    // Up for max_ejection: the next ejection starts from the base again.
    tokio::time::advance(Duration::from_secs(60)).await;
    let now = Instant::now();
    let t = (0..3)
        .filter_map(|_| s.on_traffic(false, now, &POLICY))
        .next();
    assert_eq!(
        t.map(|t| t.cause),
        Some(Cause::Ejected(Duration::from_secs(5)))
    );
}

#[tokio::test(start_paused = true)]
async fn passive_ejection_can_be_disabled() {
    let policy = HealthPolicy {
        consecutive_failures: None,
        ..POLICY
    };
    let mut s = EndpointState::new();
    s.on_probe(true, Instant::now(), &policy);
    for _ in 0..100 {
        assert_eq!(s.on_traffic(false, Instant::now(), &policy), None);
    }
    assert_eq!(s.health(), Health::Up);
}

#[tokio::test(start_paused = true)]
async fn first_failure_tracks_the_start_of_a_failure_run() {
    let mut s = EndpointState::new();
    step(&mut s, true);
    let start = Instant::now();
    step(&mut s, false);
    tokio::time::advance(Duration::from_millis(300)).await;
    step(&mut s, false);
    step(&mut s, false);
    assert_eq!(s.health(), Health::Down);
    assert_eq!(s.first_failure(), Some(start));
    step(&mut s, true);
    step(&mut s, true);
    assert_eq!(s.first_failure(), None);
}

#[tokio::test(start_paused = true)]
async fn probe_recovery_resets_the_passive_streak() {
    let mut s = EndpointState::new();
    step(&mut s, true);
    // Probes take the endpoint down; live failures keep arriving meanwhile (requests that were
    // already on their way, or a client retrying).
    for _ in 0..3 {
        step(&mut s, false);
    }
    assert_eq!(s.health(), Health::Down);
    let now = Instant::now();
    for _ in 0..5 {
        assert_eq!(s.on_traffic(false, now, &POLICY), None, "already down");
    }
    tokio::time::advance(Duration::from_secs(1)).await;
    step(&mut s, true);
    assert_eq!(
        step(&mut s, true).map(|t| (t.to, t.cause)),
        Some((Health::Up, Cause::ProbesPassed))
    );
    // Failures from before the recovery are history: ejection needs a fresh streak of 3.
    let now = Instant::now();
    assert_eq!(s.on_traffic(false, now, &POLICY), None);
    assert_eq!(s.on_traffic(false, now, &POLICY), None);
    assert_eq!(
        s.on_traffic(false, now, &POLICY).map(|t| t.cause),
        Some(Cause::Ejected(Duration::from_secs(5)))
    );
}

#[tokio::test(start_paused = true)]
async fn a_slow_ejection_takes_the_failure_ejection_times_and_doubles_with_them() {
    let mut s = EndpointState::new();
    assert_eq!(
        s.on_slow(Instant::now(), &POLICY),
        None,
        "only an up endpoint is ejected"
    );
    step(&mut s, true);
    let t = s.on_slow(Instant::now(), &POLICY).expect("ejected");
    assert_eq!(
        (t.to, t.cause),
        (Health::Down, Cause::Slow(Duration::from_secs(5)))
    );
    assert_eq!(s.on_slow(Instant::now(), &POLICY), None, "already down");
    // Probes re-admit it after the ejection, as after failures.
    tokio::time::advance(Duration::from_secs(5)).await;
    step(&mut s, true);
    assert_eq!(step(&mut s, true).map(|t| t.to), Some(Health::Up));
    // The next ejection, slow or failing, is twice as long.
    let now = Instant::now();
    let mut t = None;
    for _ in 0..3 {
        t = t.or(s.on_traffic(false, now, &POLICY));
    }
    assert_eq!(
        t.map(|t| t.cause),
        Some(Cause::Ejected(Duration::from_secs(10)))
    );
}
