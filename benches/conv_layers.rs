//! Per-layer timing of the CPU 3x3 convolution kernels on the shapes of the lite U-Net at a
//! 572 px input tile (or the tile given: `cargo bench --bench conv_layers -- 252`; `-- paper`
//! for the paper preset's layers): forward, weight gradient and input gradient, in ms and
//! GFLOP/s.

use std::time::Instant;

use unet_studio::kernels::common::ConvShape;
use unet_studio::kernels::conv3x3::{conv3x3_forward, conv3x3_input_grad, conv3x3_weight_grad};

fn best_ms(mut f: impl FnMut()) -> f64 {
    f();
    (0..7)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    let tile = std::env::args()
        .skip(1)
        .find_map(|a| a.parse::<usize>().ok())
        .unwrap_or(572);
    // `paper` for the paper preset's channels (base 64), else the lite preset's (16).
    let base = if std::env::args().any(|a| a == "paper") {
        64
    } else {
        16
    };
    let depth = 4usize;
    let mut shapes = Vec::new();
    let (mut s, mut cin) = (tile, 1usize);
    for l in 0..depth {
        let c = base << l;
        shapes.push((cin, c, s));
        shapes.push((c, c, s - 2));
        s = (s - 4) / 2;
        cin = c;
    }
    let c = base << depth;
    shapes.push((cin, c, s));
    shapes.push((c, c, s - 2));
    s -= 4;
    for l in (0..depth).rev() {
        let c = base << l;
        s *= 2;
        shapes.push((2 * c, c, s));
        shapes.push((c, c, s - 2));
        s -= 4;
    }
    println!(
        "{:>5} {:>5} {:>5} {:>9} {:>8} {:>9} {:>8} {:>9} {:>8}",
        "cin", "cout", "edge", "fwd ms", "GF/s", "dW ms", "GF/s", "dX ms", "GF/s"
    );
    let (mut tf, mut tw, mut tx, mut flops) = (0.0, 0.0, 0.0, 0.0);
    for (cin, cout, h) in shapes {
        let sh = ConvShape { cin, cout, h, w: h };
        let x: Vec<f32> = (0..cin * h * h).map(|i| (i % 13) as f32 * 0.1).collect();
        let w: Vec<f32> = (0..cout * cin * 9).map(|i| (i % 7) as f32 * 0.01).collect();
        let b = vec![0.0f32; cout];
        let dy = conv3x3_forward(&x, &w, Some(&b), &sh, true);
        let f = best_ms(|| drop(conv3x3_forward(&x, &w, Some(&b), &sh, true)));
        let gw = best_ms(|| drop(conv3x3_weight_grad(&x, &dy, &sh)));
        let gx = best_ms(|| drop(conv3x3_input_grad(&dy, &w, &sh)));
        let fl = 2.0 * (cin * cout * 9) as f64 * ((h - 2) * (h - 2)) as f64;
        let gf = |ms: f64| fl / (ms * 1e-3) / 1e9;
        println!(
            "{cin:>5} {cout:>5} {h:>5} {f:>9.1} {:>8.1} {gw:>9.1} {:>8.1} {gx:>9.1} {:>8.1}",
            gf(f),
            gf(gw),
            gf(gx)
        );
        tf += f;
        tw += gw;
        tx += gx;
        flops += fl;
    }
    println!(
        "total: forward {tf:.1} ms, weight gradient {tw:.1} ms, input gradient {tx:.1} ms ({:.2} GFLOP each)",
        flops / 1e9
    );
}
