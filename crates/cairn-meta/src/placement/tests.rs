use super::*;
use proptest::prelude::*;
use std::collections::BTreeSet;

fn node(id: u64, zone: &str) -> NodeInfo {
    NodeInfo {
        id: NodeId(id),
        zone: zone.into(),
        host: format!("host-{id}"),
        join_seq: id,
        used: 0,
        free: 1 << 40,
        accepting: true,
    }
}

fn zoned(n: u64, zones: &[&str]) -> Vec<NodeInfo> {
    (1..=n)
        .map(|i| node(i, zones[(i as usize - 1) % zones.len()]))
        .collect()
}

fn req<'a>(cues: &'a Cues, want: usize) -> PlaceRequest<'a> {
    PlaceRequest {
        cues,
        default_rep: 3,
        want,
        have: &[],
        exclude: &[],
        len: 1 << 20,
        writer_host: None,
        together_key: None,
    }
}

fn cues(s: &str) -> Cues {
    Cues::parse(s).unwrap()
}

#[test]
fn buddy_sets_mix_zones_and_absorb_the_remainder() {
    // Nodes of three zones joining in turn: every set spans three zones.
    let mut p = Placer::new(zoned(10, &["a", "b", "c"]), PlacerConfig::default());
    let sets = p.buddy_sets(3);
    assert_eq!(sets.len(), 3);
    assert_eq!(sets[2].len(), 4, "the tenth node joins the last set");
    for s in &sets {
        let zones: BTreeSet<&str> = s
            .iter()
            .map(|id| p.node(*id).unwrap().zone.as_str())
            .collect();
        assert_eq!(zones.len(), 3, "{sets:?}");
    }
    // Node 4 (zone a) waits for a node of zone b rather than pair up with
    // node 3, also of zone a.
    let nodes: Vec<NodeInfo> = [(1, "a"), (2, "b"), (3, "a"), (4, "a"), (5, "b"), (6, "b")]
        .into_iter()
        .map(|(i, z)| node(i, z))
        .collect();
    let mut p = Placer::new(nodes, PlacerConfig::default());
    for s in p.buddy_sets(2) {
        let zones: BTreeSet<&str> = s
            .iter()
            .map(|id| p.node(*id).unwrap().zone.as_str())
            .collect();
        assert_eq!(zones.len(), 2);
    }
}

#[test]
fn buddy_repair_completes_the_set_or_falls_back() {
    let mut p = Placer::new(zoned(9, &["a", "b", "c"]), PlacerConfig::default());
    let sets = p.buddy_sets(3);
    let set = sets[1].clone();
    let c = cues("place=buddy");
    let mut rng = fastrand::Rng::with_seed(1);
    let have = [set[0], set[2]];
    let r = PlaceRequest {
        have: &have,
        ..req(&c, 1)
    };
    assert_eq!(p.place(&r, &mut rng).unwrap(), vec![set[1]]);
    // The third member is gone: any eligible node will do.
    let r = PlaceRequest {
        have: &have,
        exclude: &set[1..2],
        ..req(&c, 1)
    };
    let got = p.place(&r, &mut rng).unwrap();
    assert!(!set.contains(&got[0]));
}

#[test]
fn copysets_follow_the_scatter_width() {
    let mut p = Placer::new(zoned(9, &["z"]), PlacerConfig::default());
    // S = 4, rep = 3: two permutations of three groups each.
    let sets = p.copysets(3);
    assert_eq!(sets.len(), 6);
    let c = cues("place=copyset");
    let mut rng = fastrand::Rng::with_seed(2);
    for _ in 0..200 {
        let got: BTreeSet<NodeId> = p
            .place(&req(&c, 3), &mut rng)
            .unwrap()
            .into_iter()
            .collect();
        assert!(sets.iter().any(|s| got.iter().all(|g| s.contains(g))));
    }
    // Stable for a node set: the same seed derives the same copysets.
    let mut q = Placer::new(zoned(9, &["z"]), PlacerConfig::default());
    assert_eq!(q.copysets(3), sets);
}

#[test]
fn local_puts_the_first_copy_on_the_writers_host() {
    let mut nodes = zoned(6, &["z"]);
    nodes[4].host = "laptop".into();
    let mut p = Placer::new(nodes, PlacerConfig::default());
    let c = cues("place=local");
    let mut rng = fastrand::Rng::with_seed(3);
    for _ in 0..50 {
        let r = PlaceRequest {
            writer_host: Some("laptop"),
            ..req(&c, 3)
        };
        let got = p.place(&r, &mut rng).unwrap();
        assert_eq!(got[0], NodeId(5));
        assert_eq!(got.iter().collect::<BTreeSet<_>>().len(), 3);
    }
    // No node on that host: random placement, not an error.
    let r = PlaceRequest {
        writer_host: Some("elsewhere"),
        ..req(&c, 3)
    };
    assert_eq!(p.place(&r, &mut rng).unwrap().len(), 3);
}

#[test]
fn spread_uses_every_zone_it_can() {
    let mut p = Placer::new(zoned(12, &["a", "b", "c"]), PlacerConfig::default());
    let c = cues("place=spread,rep=3");
    let mut rng = fastrand::Rng::with_seed(4);
    for _ in 0..100 {
        let got = p.place(&req(&c, 3), &mut rng).unwrap();
        let zones: BTreeSet<&str> = got
            .iter()
            .map(|id| p.node(*id).unwrap().zone.as_str())
            .collect();
        assert_eq!(zones.len(), 3);
    }
}

#[test]
fn errors_say_what_is_missing() {
    let mut nodes = zoned(4, &["a", "b"]);
    nodes[0].accepting = false;
    let mut p = Placer::new(nodes, PlacerConfig::default());
    let mut rng = fastrand::Rng::with_seed(5);
    let c = cues("site=mars");
    let e = p.place(&req(&c, 1), &mut rng).unwrap_err();
    assert!(
        e.message.contains("zone \"mars\"") && e.message.contains("a, b"),
        "{e}"
    );
    let c = cues("rep_sites=3");
    let e = p.place(&req(&c, 3), &mut rng).unwrap_err();
    assert!(e.message.contains("only 2 zone(s)"), "{e}");
    let c = Cues::default();
    let e = p.place(&req(&c, 4), &mut rng).unwrap_err();
    assert_eq!(e.kind, cairn_types::ErrorKind::Unavailable);
    assert!(
        e.message
            .contains("3 of 4 storage node(s) can take one (1 not live"),
        "{e}"
    );
    let c = cues("site=a");
    let e = p.place(&req(&c, 2), &mut rng).unwrap_err();
    assert!(e.message.contains("2 outside zone a"), "{e}");
    let c = Cues::default();
    let r = PlaceRequest {
        len: 1 << 41,
        ..req(&c, 1)
    };
    let e = p.place(&r, &mut rng).unwrap_err();
    assert_eq!(e.kind, cairn_types::ErrorKind::NoSpace, "{e}");
}

#[test]
fn min_copy_fills_the_emptiest_first_across_files() {
    let mut p = Placer::new(zoned(5, &["z"]), PlacerConfig::default());
    let c = cues("place=min_copy,rep=2");
    let mut rng = fastrand::Rng::with_seed(6);
    let mut counts = [0u32; 6];
    for _ in 0..50 {
        for id in p.place(&req(&c, 2), &mut rng).unwrap() {
            counts[id.0 as usize] += 1;
            p.record(id, 100);
        }
    }
    assert_eq!(&counts[1..], &[20, 20, 20, 20, 20]);
}

/// A random cluster and request, for the properties below.
#[derive(Debug, Clone)]
struct Case {
    nodes: Vec<NodeInfo>,
    cues: Cues,
    have: Vec<NodeId>,
    exclude: Vec<NodeId>,
    want: usize,
    key: Option<u64>,
    seed: u64,
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop::collection::vec(
            (0u8..4, any::<bool>(), 0u64..1000, prop::bool::weighted(0.9)),
            1..40,
        ),
        0usize..7,
        1u8..5,
        prop::option::of(0u8..4),
        prop::option::of(1u8..4),
        prop::option::of(any::<u64>()),
        any::<u64>(),
        prop::collection::vec(any::<prop::sample::Index>(), 0..4),
    )
        .prop_map(|(spec, scheme, rep, site, rep_sites, key, seed, picks)| {
            let nodes: Vec<NodeInfo> = spec
                .iter()
                .enumerate()
                .map(|(i, (z, big, used, acc))| NodeInfo {
                    id: NodeId(i as u64 + 1),
                    zone: format!("z{z}"),
                    host: format!("h{}", i % 3),
                    join_seq: (i as u64 * 7919) % 101,
                    used: *used,
                    free: if *big { 1 << 30 } else { 10 },
                    accepting: *acc,
                })
                .collect();
            let mut cues = Cues {
                rep: Some(rep),
                place: PlaceScheme::ALL.get(scheme).copied(),
                keep_together: key.map(|_| true),
                ..Cues::default()
            };
            if let Some(s) = rep_sites {
                cues.rep_sites = Some(s);
            } else if let Some(z) = site {
                cues.site = Some(format!("z{z}"));
            }
            let mut ids: Vec<NodeId> = picks
                .iter()
                .map(|p| nodes[p.index(nodes.len())].id)
                .collect();
            ids.dedup();
            let split = ids.len() / 2;
            let have: Vec<NodeId> = ids[..split].to_vec();
            let exclude: Vec<NodeId> = ids[split..]
                .iter()
                .copied()
                .filter(|i| !have.contains(i))
                .collect();
            let want = (rep as usize).saturating_sub(have.len()).max(1);
            Case {
                nodes,
                cues,
                have,
                exclude,
                want,
                key,
                seed,
            }
        })
}

fn run(c: &Case) -> (Placer, Result<Vec<NodeId>>) {
    let mut p = Placer::new(c.nodes.clone(), PlacerConfig::default());
    let r = PlaceRequest {
        cues: &c.cues,
        default_rep: 3,
        want: c.want,
        have: &c.have,
        exclude: &c.exclude,
        len: 100,
        writer_host: Some("h1"),
        together_key: c.key,
    };
    let got = p.place(&r, &mut fastrand::Rng::with_seed(c.seed));
    (p, got)
}

fn zone_of(p: &Placer, id: NodeId) -> String {
    p.node(id).unwrap().zone.clone()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn answers_are_distinct_eligible_and_honour_zones(c in case()) {
        let (p, got) = run(&c);
        let Ok(got) = got else { return Ok(()) };
        prop_assert_eq!(got.len(), c.want);
        prop_assert_eq!(got.iter().collect::<BTreeSet<_>>().len(), got.len());
        for id in &got {
            let n = p.node(*id).unwrap();
            prop_assert!(n.accepting && n.free > 100);
            prop_assert!(!c.have.contains(id) && !c.exclude.contains(id));
            if let Some(site) = &c.cues.site {
                prop_assert_eq!(&n.zone, site);
            }
        }
        if let Some(sites) = c.cues.rep_sites {
            let all: Vec<String> = c.have.iter().chain(&got).map(|id| zone_of(&p, *id)).collect();
            let zones: BTreeSet<&String> = all.iter().collect();
            let total = all.len();
            if c.have.is_empty() {
                prop_assert_eq!(zones.len(), (sites as usize).min(total));
            }
            let cap = total.div_ceil(sites as usize);
            for z in &zones {
                let n = all.iter().filter(|a| a == z).count();
                prop_assert!(n <= cap || c.have.iter().filter(|h| zone_of(&p, **h) == **z).count() >= n);
            }
        }
    }

    #[test]
    fn placement_is_deterministic_for_a_seed(c in case()) {
        let (_, a) = run(&c);
        let (_, b) = run(&c);
        prop_assert_eq!(a.ok(), b.ok());
    }

    #[test]
    fn min_copy_takes_the_global_minimum(c in case()) {
        let mut c = c;
        c.cues.place = Some(PlaceScheme::MinCopy);
        c.cues.keep_together = None;
        c.cues.rep_sites = None;
        let (p, got) = run(&c);
        let Ok(got) = got else { return Ok(()) };
        let eligible: Vec<&NodeInfo> = p.nodes().iter().filter(|n| {
            n.accepting && n.free > 100 && !c.have.contains(&n.id) && !c.exclude.contains(&n.id)
                && c.cues.site.as_ref().is_none_or(|s| *s == n.zone)
        }).collect();
        let mut best: Vec<(u64, NodeId)> = eligible.iter().map(|n| (n.used, n.id)).collect();
        best.sort();
        let want: Vec<NodeId> = best.iter().take(c.want).map(|b| b.1).collect();
        prop_assert_eq!(got, want);
    }

    #[test]
    fn buddy_copies_stay_in_one_healthy_set(n in 3u64..40, zones in 1usize..4, rep in 1usize..4, seed: u64) {
        let names = ["a", "b", "c"];
        let mut p = Placer::new(zoned(n, &names[..zones]), PlacerConfig::default());
        let sets = p.buddy_sets(rep);
        let c = Cues { rep: Some(rep as u8), place: Some(PlaceScheme::Buddy), ..Cues::default() };
        let mut rng = fastrand::Rng::with_seed(seed);
        for _ in 0..20 {
            let got = p.place(&req(&c, rep), &mut rng).unwrap();
            prop_assert!(sets.iter().any(|s| got.iter().all(|g| s.contains(g))), "{:?} not in {:?}", got, sets);
        }
    }

    #[test]
    fn buddy_sets_stay_fixed_as_nodes_join(
        zones in prop::collection::vec(0u8..4, 1..60),
        extra in 1usize..20,
        rep in 1usize..5,
    ) {
        let all: Vec<NodeInfo> = zones
            .iter()
            .enumerate()
            .map(|(i, z)| node(i as u64 + 1, &format!("z{z}")))
            .collect();
        let cut = all.len().saturating_sub(extra).max(1);
        let before = Placer::new(all[..cut].to_vec(), PlacerConfig::default()).buddy_sets(rep);
        let after = Placer::new(all.clone(), PlacerConfig::default()).buddy_sets(rep);
        // Every set but the last (which takes leftovers) survives the joins.
        let fixed = before.len().saturating_sub(1);
        prop_assert_eq!(&before[..fixed], &after[..fixed]);
        // Every node in exactly one set, sets of rep to 2·rep-1 nodes.
        if all.len() >= rep {
            let mut ids: Vec<NodeId> = after.iter().flatten().copied().collect();
            ids.sort();
            prop_assert_eq!(ids, all.iter().map(|n| n.id).collect::<Vec<_>>());
            for s in &after {
                prop_assert!(s.len() >= rep && s.len() < 2 * rep.max(1), "{:?}", after);
            }
        }
    }

    #[test]
    fn keep_together_is_stable_when_other_nodes_come_and_go(c in case(), drop in any::<prop::sample::Index>()) {
        let mut c = c;
        c.cues.keep_together = Some(true);
        c.key = Some(c.seed ^ 0xabc);
        c.cues.rep_sites = None;
        let (_, first) = run(&c);
        let Ok(first) = first else { return Ok(()) };
        // Same key, another RNG seed: the same nodes.
        let mut again = c.clone();
        again.seed = c.seed.wrapping_add(1);
        prop_assert_eq!(run(&again).1.ok(), Some(first.clone()));
        // Unrelated nodes leave: nothing moves (buddy sets and copysets are
        // re-cut when membership changes, so only node-level schemes).
        if matches!(c.cues.place, Some(PlaceScheme::Buddy | PlaceScheme::Copyset)) {
            return Ok(());
        }
        let gone = c.nodes[drop.index(c.nodes.len())].id;
        if first.contains(&gone) || c.have.contains(&gone) || c.exclude.contains(&gone) {
            return Ok(());
        }
        let mut fewer = c.clone();
        fewer.nodes.retain(|n| n.id != gone);
        prop_assert_eq!(run(&fewer).1.ok(), Some(first.clone()));
        // A node joins: it may take one copy, the rest stay.
        let mut more = c.clone();
        let mut new = c.nodes[0].clone();
        new.id = NodeId(1000);
        new.join_seq = 1000;
        more.nodes.push(new);
        let later = run(&more).1.unwrap();
        let moved = later.iter().filter(|n| !first.contains(n)).count();
        prop_assert!(moved <= 1, "{:?} → {:?}", first, later);
    }
}
