use super::*;

const T0: u64 = 1_764_028_800_000; // 2025-11-25T00:00:00Z

fn click(position: Option<u64>, at_ms: u64) -> Event {
    Event {
        action: Action::Click,
        position,
        timestamp_ms: Some(at_ms),
    }
}

fn event(action: Action, at_ms: u64) -> Event {
    Event {
        action,
        position: None,
        timestamp_ms: Some(at_ms),
    }
}

fn search<'a>(session: Option<&'a str>, at_ms: u64, query: &'a str, results: u64) -> Search<'a> {
    Search {
        session_id: session,
        timestamp_ms: Some(at_ms),
        query_normalized: query,
        results_count: results,
        feedback: Vec::new(),
    }
}

fn report(searches: &[Search<'_>], top: usize) -> Quality {
    let mut tally = Tally::new();
    for s in searches {
        tally.add(s);
    }
    tally.finish(top)
}

#[test]
fn a_day_without_searches_has_no_rates_at_all() {
    let q = report(&[], 10);
    assert_eq!(q.searches, 0);
    for rate in [
        q.click_through_rate,
        q.no_click_rate,
        q.zero_result_rate,
        q.mean_click_position,
        q.mean_reciprocal_rank,
        q.add_to_order_rate,
        q.purchase_rate,
        q.reformulation_rate,
    ] {
        assert_eq!(rate, None);
    }
    assert!(q.top_queries_without_clicks.is_empty());
    let json = serde_json::to_value(&q).unwrap();
    assert_eq!(
        json["click_through_rate"],
        serde_json::Value::Null,
        "null, not 0"
    );
}

#[test]
fn only_zero_result_searches_leave_the_click_rates_null() {
    let q = report(
        &[
            search(None, T0, "nothing", 0),
            search(None, T0 + 1, "nada", 0),
        ],
        10,
    );
    assert_eq!(q.zero_result_rate, Some(1.0));
    assert_eq!(q.searches_with_results, 0);
    assert_eq!(q.click_through_rate, None);
    assert_eq!(q.no_click_rate, None);
    assert_eq!(q.mean_reciprocal_rank, None);
    assert_eq!(q.add_to_order_rate, None);
    assert_eq!(q.purchase_rate, None);
    assert_eq!(q.mean_click_position, None);
    assert_eq!(q.reformulation_rate, None, "no search carries a session");
    assert!(
        q.top_queries_without_clicks.is_empty(),
        "a query without results is a zero-result query, not an unclicked one"
    );
}

#[test]
fn click_order_and_purchase_rates_count_searches_with_results() {
    let mut a = search(None, T0, "milk", 3);
    a.feedback = vec![
        click(Some(2), T0 + 5),
        click(Some(1), T0 + 6),
        event(Action::AddToOrder, T0 + 7),
        event(Action::Purchase, T0 + 8),
    ];
    let mut b = search(None, T0 + 10, "bread", 2);
    b.feedback = vec![click(Some(4), T0 + 11), event(Action::AddToOrder, T0 + 12)];
    let c = search(None, T0 + 20, "eggs", 5);
    // A click without a known position still makes a clicked search.
    let mut d = search(None, T0 + 30, "jam", 1);
    d.feedback = vec![click(None, T0 + 31)];
    // Feedback on a search without results counts nowhere.
    let mut e = search(None, T0 + 40, "nothing", 0);
    e.feedback = vec![click(Some(1), T0 + 41)];
    let q = report(&[a, b, c, d, e], 10);
    assert_eq!(q.searches, 5);
    assert_eq!(q.searches_with_results, 4);
    assert_eq!(q.zero_result_rate, Some(1.0 / 5.0));
    assert_eq!(q.click_through_rate, Some(3.0 / 4.0));
    assert_eq!(q.no_click_rate, Some(1.0 / 4.0));
    assert_eq!(q.add_to_order_rate, Some(2.0 / 4.0));
    assert_eq!(q.purchase_rate, Some(1.0 / 4.0));
    assert_eq!(q.clicks_with_position, 3);
    assert_eq!(q.mean_click_position, Some((2 + 1 + 4) as f64 / 3.0));
    // First positioned clicks: 2 (milk), 4 (bread); none for eggs and jam.
    assert_eq!(q.mean_reciprocal_rank, Some((1.0 / 2.0 + 1.0 / 4.0) / 4.0));
}

#[test]
fn a_search_is_reformulated_when_its_session_searches_again_within_60s_without_clicking() {
    let s = Some("s1");
    let other = Some("s2");
    let mut clicked = search(s, T0 + 200_000, "jam", 2);
    clicked.feedback = vec![click(Some(1), T0 + 230_000)];
    let searches = [
        // Followed 30 s later: reformulated.
        search(s, T0, "milk", 2),
        // Followed exactly 60 s later: reformulated.
        search(s, T0 + 30_000, "mlk", 0),
        // Followed 60.001 s later: not.
        search(s, T0 + 90_000, "milk 2%", 2),
        // Followed 49 s later: reformulated (another session's search in
        // between does not matter, nor does its click).
        search(s, T0 + 150_001, "bread", 2),
        // Clicked 30 s in, next search 40 s in: not reformulated.
        clicked,
        // The session's last search: not followed.
        search(s, T0 + 240_000, "jam jar", 2),
        // Another session, alone on the day.
        {
            let mut x = search(other, T0 + 160_000, "eggs", 1);
            x.feedback = vec![click(Some(1), T0 + 170_000)];
            x
        },
        // No session: outside the denominator.
        search(None, T0 + 1, "tea", 2),
    ];
    let q = report(&searches, 10);
    assert_eq!(q.searches_with_session, 7);
    assert_eq!(q.reformulation_rate, Some(3.0 / 7.0));
}

#[test]
fn a_click_on_an_earlier_search_between_two_searches_breaks_the_reformulation() {
    let s = Some("s1");
    let mut first = search(s, T0, "milk", 2);
    // The user went back to the first results and clicked, between the
    // second and the third search.
    first.feedback = vec![click(Some(2), T0 + 15_000)];
    let searches = [
        first,
        search(s, T0 + 10_000, "mlk", 2),
        search(s, T0 + 20_000, "milk 1l", 2),
    ];
    let q = report(&searches, 10);
    // first → second: the click (15 s) is after the second search (10 s),
    // so not between: reformulated. second → third: clicked in between.
    assert_eq!(q.reformulation_rate, Some(1.0 / 3.0));
}

#[test]
fn a_click_at_the_same_millisecond_as_the_next_search_counts_as_between() {
    let s = Some("s1");
    let mut first = search(s, T0, "milk", 2);
    first.feedback = vec![click(Some(1), T0 + 5_000)];
    let q = report(&[first, search(s, T0 + 5_000, "bread", 2)], 10);
    assert_eq!(q.reformulation_rate, Some(0.0));
}

#[test]
fn a_click_on_an_earlier_search_at_the_same_millisecond_as_a_search_comes_before_it() {
    let s = Some("s1");
    let mut first = search(s, T0, "milk", 2);
    first.feedback = vec![click(Some(1), T0 + 5_000)];
    let mut third = search(s, T0 + 9_000, "milk 1l", 2);
    // A click on a search at the millisecond it began follows it.
    third.feedback = vec![click(Some(1), T0 + 9_000)];
    let searches = [
        first,
        // Began the millisecond the first search was clicked: that click
        // came before it, so it is not between this search and the next.
        search(s, T0 + 5_000, "mlk", 2),
        third,
    ];
    let q = report(&searches, 10);
    // first: clicked before the second: not. second → third: no click in
    // between (the third's own click follows it): reformulated.
    assert_eq!(q.reformulation_rate, Some(1.0 / 3.0));
}

#[test]
fn top_queries_without_clicks_rank_unclicked_queries_with_results() {
    let mut clicked_milk = search(None, T0, "milk", 2);
    clicked_milk.feedback = vec![click(Some(1), T0 + 1)];
    let searches = [
        clicked_milk,
        search(None, T0 + 1, "milk", 2),
        search(None, T0 + 2, "bread", 2),
        search(None, T0 + 3, "bread", 2),
        search(None, T0 + 4, "bread", 2),
        search(None, T0 + 5, "eggs", 2),
        search(None, T0 + 6, "apples", 2),
        search(None, T0 + 7, "nothing", 0),
        search(None, T0 + 8, "nothing", 0),
        search(None, T0 + 9, "nothing", 0),
        search(None, T0 + 10, "nothing", 0),
    ];
    let q = report(&searches, 2);
    let listed: Vec<(&str, u64)> = q
        .top_queries_without_clicks
        .iter()
        .map(|c| (c.query.as_str(), c.count))
        .collect();
    // milk was clicked once: out. Ties by query, capped at 2.
    assert_eq!(listed, vec![("bread", 3), ("apples", 1)]);
    assert!(report(&searches, 0).top_queries_without_clicks.is_empty());
}

#[test]
fn the_reciprocal_rank_does_not_depend_on_the_order_searches_are_read() {
    let mut searches: Vec<Search<'_>> = (1..=7)
        .map(|p| {
            let mut s = search(None, T0 + p, "q", 10);
            s.feedback = vec![click(Some(p), T0 + 100)];
            s
        })
        .collect();
    let forward = report(&searches, 1).mean_reciprocal_rank;
    searches.reverse();
    assert_eq!(report(&searches, 1).mean_reciprocal_rank, forward);
}

#[test]
fn facts_of_a_record_take_a_missing_position_from_the_impressions() {
    let record = Record::from_compact(
        "0190b7e2-0000-7000-8000-000000000000",
        br#"[1764028800000,"Milk",null,"s-1",null,null,3,["p1","p2","p3"],[],[],1.0,"miss","search",null,null,"milk"]"#,
    )
    .unwrap();
    let feedback: Vec<Vec<u8>> = [
        r#"{"event":"click","product_id":"p3","position":null,"timestamp":"2025-11-25T00:00:05.000Z"}"#,
        r#"{"event":"click","product_id":"p2","position":7,"timestamp":"2025-11-25T00:00:06.000Z"}"#,
        r#"{"event":"click","product_id":"p2","position":0,"timestamp":"2025-11-25T00:00:07.000Z"}"#,
        r#"{"event":"click","product_id":"elsewhere","position":null,"timestamp":"2025-11-25T00:00:08.000Z"}"#,
        r#"{"event":"like","product_id":"p1","position":1,"timestamp":"2025-11-25T00:00:09.000Z"}"#,
        r#"not json"#,
    ]
    .iter()
    .map(|f| f.as_bytes().to_vec())
    .collect();
    let facts = Search::of(&record, &feedback);
    assert_eq!(facts.session_id, Some("s-1"));
    assert_eq!(facts.timestamp_ms, Some(T0));
    assert_eq!(facts.query_normalized, "milk");
    assert_eq!(facts.results_count, 3);
    let positions: Vec<Option<u64>> = facts.feedback.iter().map(|e| e.position).collect();
    // Missing: the impression's. Given: as given. 0 is not a position:
    // the impression's. Not shown and not given: unknown.
    assert_eq!(positions, vec![Some(3), Some(7), Some(2), None]);
    assert_eq!(facts.feedback[0].timestamp_ms, Some(T0 + 5_000));
}
