//! smol-specific node API: readers of known and unknown length.

use std::time::Duration;

use asoc_smol::Smol;
use asoc_testkit::scenarios as s;
use futures_lite::AsyncReadExt;

#[test]
fn readers_of_known_and_unknown_length_and_a_stream_reader() {
    smol::block_on(async {
        let net = Smol::global();
        let b = s::start(&net, s::builder(s::KEY).chunk_size(100_000)).await;
        let a = s::start(
            &net,
            s::builder(s::KEY)
                .chunk_size(100_000)
                .static_peer(b.local_addr().to_string()),
        )
        .await;
        assert_eq!(a.wait_for_peers(1, Duration::from_secs(10)).await, 1);
        let data = s::chunk(9, 0, 1_234_567);
        let to_b = s::route(&a, &b);
        asoc_smol::send_reader(&a, to_b, &data[..], Some(data.len() as u64))
            .await
            .unwrap();
        asoc_smol::send_reader(&a, to_b, &data[..], None)
            .await
            .unwrap();
        for _ in 0..2 {
            let incoming = b.accept_stream().await.unwrap();
            let mut reader = asoc_smol::StreamReader::new(incoming.stream);
            let mut got = Vec::new();
            reader.read_to_end(&mut got).await.unwrap();
            assert!(got == data);
            assert_eq!(got.len(), 1_234_567);
        }
        let short = asoc_smol::send_reader(&a, to_b, &data[..10], Some(11)).await;
        let long = asoc_smol::send_reader(&a, to_b, &data[..12], Some(11)).await;
        asoc_testkit::scenarios::assert_declared_len_errors(
            &short.unwrap_err(),
            &long.unwrap_err(),
        );
    });
}
