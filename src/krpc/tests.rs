//! Bad-input cases 6–17 of the protocol reference, and encode→decode
//! properties over generated messages.

use std::net::SocketAddr;

use super::compact::NodeInfo;
use super::message::*;
use crate::id::Id;
use crate::rng::Rng;

fn id(b: u8) -> Id {
    Id([b; 20])
}

fn q(tid: &[u8], method: Method<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    encode_query(
        &mut out,
        &Header {
            tid,
            version: Some(b"DH01"),
        },
        &id(1),
        &method,
        Want::default(),
        false,
    );
    out
}

#[test]
fn case6_short_and_non_dict_packets_are_dropped() {
    for p in [
        &b""[..],
        b"d1:ad2:id20:aaaaaaaaaaaaaaaaaaaae",
        b"de",
        b"l1:t2:aa1:y1:qe-----------------",
        b"i1e",
        b"le",
    ] {
        assert!(decode(p).is_err());
    }
    // A top-level list long enough to pass the size check.
    let list = b"l1:t2:aa1:y1:q1:q4:pinge";
    assert_eq!(decode(list), Err(KrpcError::NotKrpc));
    // 20 bytes or fewer never parse, however well-formed.
    let tiny = b"d1:t1:a1:y1:q1:q0:e";
    assert!(tiny.len() <= 20);
    assert_eq!(decode(tiny), Err(KrpcError::NotKrpc));
}

#[test]
fn case7_bad_y_gets_no_reply() {
    let base =
        |y: &str| format!("d1:ad2:id20:aaaaaaaaaaaaaaaaaaaae1:q4:ping1:t2:xx{y}e").into_bytes();
    assert_eq!(decode(&base("")), Err(KrpcError::BadY));
    assert_eq!(decode(&base("1:y2:qq")), Err(KrpcError::BadY));
    assert_eq!(decode(&base("1:yi1e")), Err(KrpcError::BadY));
    assert_eq!(decode(&base("1:y1:z")), Err(KrpcError::BadY));
    assert!(decode(&base("1:y1:q")).is_ok());
}

#[test]
fn case8_tids_of_any_length_echo_verbatim() {
    for len in [0usize, 1, 2, 4, 8, 255] {
        let tid: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
        let pkt = q(&tid, Method::Ping);
        let m = decode(&pkt).unwrap();
        assert_eq!(m.tid, &tid[..]);
        let mut reply = Vec::new();
        encode_response(
            &mut reply,
            &Header {
                tid: m.tid,
                version: None,
            },
            None,
            &id(2),
            &ResponseBody::default(),
        );
        assert_eq!(decode(&reply).unwrap().tid, &tid[..]);
    }
    let long = vec![b'x'; 256];
    assert_eq!(decode(&q(&long, Method::Ping)), Err(KrpcError::BadTid));
}

#[test]
fn case9_malformed_errors_do_not_crash() {
    let make = |e: &str| format!("d1:e{e}1:t2:xx1:y1:e1:v4:LT01e").into_bytes();
    let p1 = make("3:bad");
    let m = decode(&p1).unwrap();
    assert_eq!(
        m.body,
        Body::Error(ErrorMsg {
            code: None,
            message: Some(b"bad")
        })
    );
    let p2 = make("li201ee");
    let m = decode(&p2).unwrap();
    assert_eq!(
        m.body,
        Body::Error(ErrorMsg {
            code: Some(201),
            message: None
        })
    );
    let p3 = make("l3:abci201ee");
    let m = decode(&p3).unwrap();
    assert_eq!(
        m.body,
        Body::Error(ErrorMsg {
            code: None,
            message: None
        })
    );
    let p4 = make("li203e15:invalid messagee");
    let m = decode(&p4).unwrap();
    assert_eq!(
        m.body,
        Body::Error(ErrorMsg {
            code: Some(203),
            message: Some(b"invalid message")
        })
    );
}

fn bad_query(pkt: &[u8]) -> (ErrorCode, &'static str) {
    match decode(pkt) {
        Err(KrpcError::BadQuery { code, message, tid }) => {
            assert_eq!(tid, b"xx");
            (code, message)
        }
        other => panic!("expected a bad query, got {other:?}"),
    }
}

#[test]
fn case10_bad_ids_and_missing_target() {
    let with_id = |idpart: &str| {
        format!("d1:ad{idpart}6:target20:bbbbbbbbbbbbbbbbbbbbe1:q9:find_node1:t2:xx1:y1:qe")
            .into_bytes()
    };
    assert_eq!(
        bad_query(&with_id("")),
        (ErrorCode::Protocol, "missing 'id' key")
    );
    assert_eq!(
        bad_query(&with_id("2:id19:aaaaaaaaaaaaaaaaaaa")),
        (ErrorCode::Protocol, "invalid 'id' length")
    );
    assert_eq!(
        bad_query(&with_id("2:id21:aaaaaaaaaaaaaaaaaaaaa")),
        (ErrorCode::Protocol, "invalid 'id' length")
    );
    // An id of the wrong type reads as missing.
    assert_eq!(
        bad_query(&with_id("2:idi5e")),
        (ErrorCode::Protocol, "missing 'id' key")
    );
    let no_target = b"d1:ad2:id20:aaaaaaaaaaaaaaaaaaaae1:q9:find_node1:t2:xx1:y1:qe";
    assert_eq!(
        bad_query(no_target),
        (ErrorCode::Protocol, "missing 'target' key")
    );
    let sample_no_target =
        b"d1:ad2:id20:aaaaaaaaaaaaaaaaaaaae1:q17:sample_infohashes1:t2:xx1:y1:qe";
    assert_eq!(
        bad_query(sample_no_target),
        (ErrorCode::Protocol, "missing 'target' key")
    );
}

#[test]
fn case11_unknown_methods() {
    let with_target =
        b"d1:ad2:id20:aaaaaaaaaaaaaaaaaaaa6:target20:bbbbbbbbbbbbbbbbbbbbe1:q5:fancy1:t2:xx1:y1:qe";
    let m = decode(with_target).unwrap();
    let Body::Query(qq) = m.body else {
        panic!("not a query")
    };
    assert_eq!(
        qq.method,
        Method::Unknown {
            name: b"fancy",
            target: Some(Id([b'b'; 20]))
        }
    );
    let with_ih =
        b"d1:ad2:id20:aaaaaaaaaaaaaaaaaaaa9:info_hash20:cccccccccccccccccccce1:q3:zzz1:t2:xx1:y1:qe";
    let Body::Query(qq) = decode(with_ih).unwrap().body else {
        panic!()
    };
    assert_eq!(
        qq.method,
        Method::Unknown {
            name: b"zzz",
            target: Some(Id([b'c'; 20]))
        }
    );
    let bare = b"d1:ad2:id20:aaaaaaaaaaaaaaaaaaaae1:q3:zzz1:t2:xx1:y1:qe";
    let Body::Query(qq) = decode(bare).unwrap().body else {
        panic!()
    };
    assert_eq!(
        qq.method,
        Method::Unknown {
            name: b"zzz",
            target: None
        }
    );
}

#[test]
fn case12_announce_argument_checks() {
    let ann = |port: &str, implied: &str| {
        format!(
            "d1:ad2:id20:aaaaaaaaaaaaaaaaaaaa{implied}9:info_hash20:cccccccccccccccccccc{port}5:token8:tttttttte1:q13:announce_peer1:t2:xx1:y1:qe"
        )
        .into_bytes()
    };
    assert_eq!(
        bad_query(&ann("4:porti-1e", "")),
        (ErrorCode::Protocol, "invalid port")
    );
    assert_eq!(
        bad_query(&ann("4:porti70000e", "")),
        (ErrorCode::Protocol, "invalid port")
    );
    assert_eq!(
        bad_query(&ann("4:porti0e", "")),
        (ErrorCode::Protocol, "invalid port")
    );
    assert_eq!(
        bad_query(&ann("", "")),
        (ErrorCode::Protocol, "missing 'port' key")
    );
    // implied_port=1 with port=0 is fine: the source port is used.
    let implied = ann("4:porti0e", "12:implied_porti1e");
    let Body::Query(qq) = decode(&implied).unwrap().body else {
        panic!()
    };
    assert!(matches!(
        qq.method,
        Method::AnnouncePeer {
            port: 0,
            implied_port: true,
            ..
        }
    ));
    let no_token = b"d1:ad2:id20:aaaaaaaaaaaaaaaaaaaa9:info_hash20:cccccccccccccccccccc4:porti1ee1:q13:announce_peer1:t2:xx1:y1:qe";
    assert_eq!(
        bad_query(no_token),
        (ErrorCode::Protocol, "missing 'token' key")
    );
}

fn response(r: &str) -> Vec<u8> {
    format!("d1:rd2:id20:aaaaaaaaaaaaaaaaaaaa{r}e1:t2:xx1:y1:re").into_bytes()
}

fn resp(pkt: &[u8]) -> Response<'_> {
    match decode(pkt).unwrap().body {
        Body::Response(r) => r,
        other => panic!("not a response: {other:?}"),
    }
}

#[test]
fn case14_short_nodes() {
    for len in [0usize, 25, 27, 520] {
        let nodes: String = (0..len)
            .map(|i| char::from(b'A' + (i % 26) as u8))
            .collect();
        let pkt = response(&format!("5:nodes{len}:{nodes}"));
        let r = resp(&pkt);
        assert_eq!(r.nodes.iter().count(), len / 26);
    }
    let pkt = response(&format!("6:nodes639:{}", "x".repeat(39)));
    assert_eq!(resp(&pkt).nodes6.iter().count(), 1);
}

#[test]
fn case15_mixed_values() {
    // 6 + 18 + 5 + 7 byte entries, a non-string, then a 6-byte one.
    let mut r = b"d1:rd2:id20:aaaaaaaaaaaaaaaaaaaa6:valuesl6:".to_vec();
    r.extend_from_slice(&[127, 0, 0, 1, 0x1a, 0xe1]);
    r.extend_from_slice(b"18:");
    r.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 80]);
    r.extend_from_slice(b"5:abcde7:abcdefgi5e6:");
    r.extend_from_slice(&[127, 0, 0, 2, 0, 1]);
    r.extend_from_slice(b"ee1:t2:xx1:y1:re");
    let peers: Vec<SocketAddr> = resp(&r).peers().collect();
    assert_eq!(
        peers,
        vec![
            "127.0.0.1:6881".parse().unwrap(),
            "[::1]:80".parse().unwrap(),
            // Port 1 is syntactically valid; the node's peer filter drops it.
            "127.0.0.2:1".parse().unwrap(),
        ]
    );
    // libtorrent's concatenated form.
    let mut c = b"d1:rd2:id20:aaaaaaaaaaaaaaaaaaaa6:values12:".to_vec();
    c.extend_from_slice(&[127, 0, 0, 1, 0, 10, 127, 0, 0, 3, 0, 11]);
    c.extend_from_slice(b"e1:t2:xx1:y1:re");
    assert_eq!(resp(&c).peers().count(), 2);
}

#[test]
fn case16_want_ignores_unknown_entries() {
    let pkt = b"d1:ad2:id20:aaaaaaaaaaaaaaaaaaaa6:target20:bbbbbbbbbbbbbbbbbbbb4:wantl2:n42:n62:zzi1eee1:q9:find_node1:t2:xx1:y1:qe";
    let Body::Query(qq) = decode(pkt).unwrap().body else {
        panic!()
    };
    assert_eq!(qq.want, Want { n4: true, n6: true });
    let only_junk = b"d1:ad2:id20:aaaaaaaaaaaaaaaaaaaa6:target20:bbbbbbbbbbbbbbbbbbbb4:wantl2:zzi1eee1:q9:find_node1:t2:xx1:y1:qe";
    let Body::Query(qq) = decode(only_junk).unwrap().body else {
        panic!()
    };
    assert!(!qq.want.is_specified());
}

#[test]
fn case17_bep51_reply_checks() {
    let ok = response(&format!(
        "8:intervali60e3:numi5e7:samples40:{}",
        "s".repeat(40)
    ));
    let s = resp(&ok).as_samples().unwrap();
    assert_eq!((s.interval, s.num, s.len()), (60, 5, 2));
    // Every sample counts, each at its own offset.
    let mut many = b"d1:rd2:id20:aaaaaaaaaaaaaaaaaaaa8:intervali0e3:numi3e7:samples60:".to_vec();
    for b in [1u8, 2, 3] {
        many.extend_from_slice(&[b; 20]);
    }
    many.extend_from_slice(b"e1:t2:xx1:y1:re");
    let got: Vec<Id> = resp(&many).as_samples().unwrap().samples().collect();
    assert_eq!(got, vec![id(1), id(2), id(3)]);

    let cases = [
        (
            "8:intervali-1e3:numi5e7:samples0:",
            SampleError::Interval(-1),
        ),
        (
            "8:intervali21601e3:numi5e7:samples0:",
            SampleError::Interval(21601),
        ),
        ("8:intervali1e3:numi-5e7:samples0:", SampleError::Num(-5)),
        (
            "8:intervali1e3:numi99999999999e7:samples0:",
            SampleError::Num(99_999_999_999),
        ),
        (
            "8:intervali1e3:numi5e7:samples21:aaaaaaaaaaaaaaaaaaaaa",
            SampleError::SamplesLength(21),
        ),
        ("8:intervali1e3:numi5e", SampleError::MissingSamples),
        ("3:numi5e7:samples0:", SampleError::MissingInterval),
    ];
    for (body, want) in cases {
        assert_eq!(resp(&response(body)).as_samples(), Err(want), "{body}");
    }
}

#[test]
fn response_without_id_is_a_bad_response() {
    let pkt = b"d1:rd5:nodes0:e1:t2:xx1:y1:re";
    assert_eq!(decode(pkt), Err(KrpcError::BadResponse { tid: b"xx" }));
    let short = b"d1:rd2:id3:abce1:t2:xx1:y1:re";
    assert_eq!(decode(short), Err(KrpcError::BadResponse { tid: b"xx" }));
}

#[test]
fn trailing_garbage_and_nesting_are_rejected() {
    let mut p = q(b"xx", Method::Ping);
    p.push(b'x');
    assert!(decode(&p).is_err());
    for depth in [1024usize, 20_000] {
        let mut pkt = b"d1:a".to_vec();
        pkt.extend(std::iter::repeat_n(b'l', depth));
        pkt.extend(std::iter::repeat_n(b'e', depth));
        pkt.extend_from_slice(b"1:t2:xx1:y1:qe");
        assert!(matches!(decode(&pkt), Err(KrpcError::Bencode(_))));
    }
}

// ---------------------------------------------------------------------------
// Properties: encode→decode is the identity over generated messages.

fn rand_id(rng: &mut Rng) -> Id {
    Id::random(rng)
}

fn rand_addr(rng: &mut Rng, v6: bool) -> SocketAddr {
    let port = 1 + rng.below(65535) as u16;
    if v6 {
        let mut o = [0u8; 16];
        rng.fill(&mut o);
        SocketAddr::new(std::net::Ipv6Addr::from(o).into(), port)
    } else {
        let mut o = [0u8; 4];
        rng.fill(&mut o);
        SocketAddr::new(std::net::Ipv4Addr::from(o).into(), port)
    }
}

#[test]
fn property_queries_round_trip() {
    let mut rng = Rng::seed_from_u64(42);
    for i in 0..5000 {
        let tid_len = rng.below(9) as usize;
        let mut tid = vec![0u8; tid_len];
        rng.fill(&mut tid);
        let mut token = vec![0u8; 1 + rng.below(20) as usize];
        rng.fill(&mut token);
        let method = match i % 6 {
            0 => Method::Ping,
            1 => Method::FindNode {
                target: rand_id(&mut rng),
            },
            2 => Method::GetPeers {
                infohash: rand_id(&mut rng),
                noseed: rng.below(2) == 1,
                scrape: rng.below(2) == 1,
            },
            3 => {
                let implied = rng.below(2) == 1;
                Method::AnnouncePeer {
                    infohash: rand_id(&mut rng),
                    port: if implied {
                        rng.below(65536) as u16
                    } else {
                        1 + rng.below(65535) as u16
                    },
                    implied_port: implied,
                    token: &token,
                    seed: [None, Some(false), Some(true)][rng.below(3) as usize],
                }
            }
            4 => Method::SampleInfohashes {
                target: rand_id(&mut rng),
            },
            _ => Method::Unknown {
                name: b"vote",
                target: Some(rand_id(&mut rng)),
            },
        };
        let want = Want {
            n4: rng.below(2) == 1,
            n6: rng.below(2) == 1,
        };
        let ro = rng.below(2) == 1;
        let sender = rand_id(&mut rng);
        let mut out = Vec::new();
        let h = Header {
            tid: &tid,
            version: Some(b"DH01"),
        };
        encode_query(&mut out, &h, &sender, &method, want, ro);
        // Strict mode: what we write is canonical (sorted keys).
        let strict = crate::bencode::Limits {
            strict: true,
            ..crate::bencode::Limits::KRPC
        };
        crate::bencode::decode_with(&out, strict).unwrap();
        if out.len() < MIN_DATAGRAM {
            continue;
        }
        let m = decode(&out).unwrap();
        assert_eq!(m.tid, &tid[..]);
        assert_eq!(m.read_only, ro);
        assert_eq!(m.version, Some(&b"DH01"[..]));
        assert_eq!(
            m.body,
            Body::Query(Query {
                id: sender,
                method,
                want,
                bootstrap: false,
            })
        );
    }
}

#[test]
fn property_responses_round_trip_and_stay_small() {
    let mut rng = Rng::seed_from_u64(7);
    for _ in 0..3000 {
        let nodes: Vec<NodeInfo> = (0..rng.below(9))
            .map(|_| NodeInfo {
                id: rand_id(&mut rng),
                addr: rand_addr(&mut rng, false),
            })
            .collect();
        let nodes6: Vec<NodeInfo> = (0..rng.below(9))
            .map(|_| NodeInfo {
                id: rand_id(&mut rng),
                addr: rand_addr(&mut rng, true),
            })
            .collect();
        let values: Vec<SocketAddr> = (0..rng.below(200))
            .map(|_| {
                let v6 = rng.below(4) == 0;
                rand_addr(&mut rng, v6)
            })
            .collect();
        let samples: Vec<Id> = (0..rng.below(25)).map(|_| rand_id(&mut rng)).collect();
        let with_samples = rng.below(2) == 1;
        let token = [9u8; 8];
        let tid = [1u8, 2, 3, 4];
        let v6 = rng.below(2) == 1;
        let requester = rand_addr(&mut rng, v6);
        // A scrape reply (BEP 33) never carries samples.
        let mut seeds = crate::krpc::scrape::ScrapeBloom::default();
        let mut leeches = crate::krpc::scrape::ScrapeBloom::default();
        for v in &values {
            if rng.below(2) == 1 {
                seeds.insert_ip(v.ip());
            } else {
                leeches.insert_ip(v.ip());
            }
        }
        let with_scrape = !with_samples && rng.below(2) == 1;
        let body = ResponseBody {
            nodes: &nodes,
            nodes6: &nodes6,
            values: &values,
            token: Some(&token),
            samples: with_samples.then_some((&samples[..], 21600, 1234)),
            scrape: with_scrape.then_some((&seeds, &leeches)),
        };
        let mut out = Vec::new();
        let responder = rand_id(&mut rng);
        let written = encode_response(
            &mut out,
            &Header {
                tid: &tid,
                version: Some(b"DH01"),
            },
            Some(requester),
            &responder,
            &body,
        );
        assert!(out.len() <= MAX_DATAGRAM, "{} bytes", out.len());
        let strict = crate::bencode::Limits {
            strict: true,
            ..crate::bencode::Limits::KRPC
        };
        crate::bencode::decode_with(&out, strict).unwrap();
        let m = decode(&out).unwrap();
        assert_eq!(m.ip, Some(requester));
        let Body::Response(r) = m.body else { panic!() };
        assert_eq!(r.id, responder);
        assert_eq!(
            r.nodes.iter().collect::<Vec<_>>(),
            nodes[..nodes.len().min(8)]
        );
        assert_eq!(
            r.nodes6.iter().collect::<Vec<_>>(),
            nodes6[..nodes6.len().min(8)]
        );
        assert_eq!(r.token, Some(&token[..]));
        if with_scrape {
            assert_eq!(r.bf_seeds, Some(&seeds.0));
            assert_eq!(r.bf_peers, Some(&leeches.0));
        } else {
            assert_eq!((r.bf_seeds, r.bf_peers), (None, None));
        }
        let peers: Vec<SocketAddr> = r.peers().collect();
        assert_eq!(peers.len(), written);
        // What was written is a prefix-respecting subset of what was given.
        for p in &peers {
            assert!(values.contains(p));
        }
        if values.len() <= 20 {
            assert_eq!(peers, values);
        }
        if with_samples {
            let s = r.as_samples().unwrap();
            assert_eq!(
                s.samples().collect::<Vec<_>>(),
                samples[..samples.len().min(20)]
            );
            assert_eq!((s.interval, s.num), (21600, 1234));
        } else {
            assert!(r.samples.is_none());
        }
    }
}

#[test]
fn errors_round_trip() {
    let mut out = Vec::new();
    let requester: SocketAddr = "127.0.0.5:999".parse().unwrap();
    encode_error(
        &mut out,
        &Header {
            tid: b"ab",
            version: None,
        },
        Some(requester),
        ErrorCode::MethodUnknown,
        "Method Unknown",
    );
    let m = decode(&out).unwrap();
    assert_eq!(m.ip, Some(requester));
    assert_eq!(
        m.body,
        Body::Error(ErrorMsg {
            code: Some(204),
            message: Some(b"Method Unknown")
        })
    );
}

#[test]
fn reply_tid_finds_replies_only() {
    use super::raw::reply_tid;
    let mut r = Vec::new();
    encode_response(
        &mut r,
        &Header {
            tid: b"ab12",
            version: Some(b"LT01"),
        },
        None,
        &Id([1; 20]),
        &ResponseBody::default(),
    );
    assert_eq!(reply_tid(&r), Some(&b"ab12"[..]));
    assert_eq!(
        reply_tid(b"d1:eli201e5:errore1:t2:xy1:y1:ee"),
        Some(&b"xy"[..])
    );
    // Keys in any order, unknown keys skipped whatever they hold.
    assert_eq!(reply_tid(b"d1:y1:r1:zli1ee1:t1:qe"), Some(&b"q"[..]));
    // Queries, missing keys and garbage take the decode path.
    assert_eq!(
        reply_tid(b"d1:ad2:id20:aaaaaaaaaaaaaaaaaaaae1:q4:ping1:t2:aa1:y1:qe"),
        None
    );
    assert_eq!(reply_tid(b"d1:t2:aae"), None);
    assert_eq!(reply_tid(b"d1:y1:re"), None);
    assert_eq!(reply_tid(b"l1:t1:ye"), None);
    // The skim stops at the second key: what follows is judged by the
    // owner's full decode.
    assert_eq!(reply_tid(b"d1:t2:aa1:y1:r"), Some(&b"aa"[..]));
    assert_eq!(reply_tid(b"d1:t2:aa"), None);
    assert_eq!(reply_tid(b""), None);
}

/// The size the docs give for a scrape query (tuning/README.md,
/// `--scrape-nodes`): 117 bytes with a 4-byte tid and a 4-byte version.
#[test]
fn scrape_query_size_is_as_documented() {
    let mut out = Vec::new();
    encode_query(
        &mut out,
        &Header {
            tid: &[1, 2, 3, 4],
            version: Some(b"DH01"),
        },
        &Id([7; 20]),
        &Method::GetPeers {
            infohash: Id([8; 20]),
            noseed: false,
            scrape: true,
        },
        Want::default(),
        false,
    );
    assert_eq!(out.len(), 117);
}
