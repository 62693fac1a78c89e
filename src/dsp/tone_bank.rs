//! [`ToneBank`]: Goertzel filters for a fixed set of frequencies, run in short blocks whose
//! complex outputs share one time reference, so that a window of the last few blocks can be
//! summed coherently and the phase advance between blocks measures each tone's exact
//! frequency. The CTCSS and DTMF detectors are built on it.
//!
//! For a block starting at sample `n0`, tone `k` gives `X = sum x[n] e^{-j w_k n}` over the
//! block with `n` counted from the start of the stream. A sine at `f` near `f_k` turns
//! `X` by `2 pi (f - f_k) B / fs` per block of `B` samples ([`Window::phase_step`]);
//! [`Window::refined`] sums the window after taking that rotation out, which is the DFT of
//! the window at the measured frequency instead of at the nominal one.

/// A complex number in f64 (only what the bank needs).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct C {
    pub re: f64,
    pub im: f64,
}

impl C {
    pub fn new(re: f64, im: f64) -> C {
        C { re, im }
    }
    pub fn times(self, o: C) -> C {
        C::new(self.re * o.re - self.im * o.im, self.re * o.im + self.im * o.re)
    }
    pub fn conj(self) -> C {
        C::new(self.re, -self.im)
    }
    pub fn plus(self, o: C) -> C {
        C::new(self.re + o.re, self.im + o.im)
    }
    pub fn norm2(self) -> f64 {
        self.re * self.re + self.im * self.im
    }
    pub fn arg(self) -> f64 {
        self.im.atan2(self.re)
    }
    pub fn expj(a: f64) -> C {
        C::new(a.cos(), a.sin())
    }
}

/// `sum e^{j theta n}` for `n` in `n0..n0 + len`.
fn block_sum(theta: f64, n0: f64, len: usize) -> C {
    let lead = C::expj((theta * n0).rem_euclid(2.0 * std::f64::consts::PI));
    let den = C::new(1.0 - theta.cos(), -theta.sin());
    if den.norm2() < 1e-18 {
        return C::new(lead.re * len as f64, lead.im * len as f64);
    }
    let num = C::new(1.0 - (theta * len as f64).cos(), -(theta * len as f64).sin());
    // num / den
    let d = den.norm2();
    let q = num.times(den.conj());
    lead.times(C::new(q.re / d, q.im / d))
}

/// Goertzel filters for `freqs` at rate `fs`, in blocks of `block` samples, keeping the last
/// `window` block outputs of every tone.
#[derive(Debug, Clone)]
pub struct ToneBank {
    fs: f64,
    freqs: Vec<f64>,
    coef: Vec<f32>,
    s1: Vec<f32>,
    s2: Vec<f32>,
    /// `e^{-j w}` per tone.
    back: Vec<C>,
    /// `e^{-j w B}` per tone.
    step: Vec<C>,
    /// `e^{-j w (n0 + B - 1)}` for the block in progress.
    phasor: Vec<C>,
    block: usize,
    filled: usize,
    /// Block outputs: `window` per tone, ring indexed by `head`.
    ring: Vec<C>,
    /// Mean square of the input per block, same ring.
    energy: Vec<f64>,
    sum_sq: f64,
    window: usize,
    head: usize,
    blocks_seen: usize,
}

impl ToneBank {
    pub fn new(fs: f64, freqs: &[f64], block: usize, window: usize) -> ToneBank {
        let block = block.max(2);
        let window = window.max(2);
        let w: Vec<f64> = freqs.iter().map(|f| 2.0 * std::f64::consts::PI * f / fs).collect();
        ToneBank {
            fs,
            freqs: freqs.to_vec(),
            coef: w.iter().map(|w| (2.0 * w.cos()) as f32).collect(),
            s1: vec![0.0; freqs.len()],
            s2: vec![0.0; freqs.len()],
            back: w.iter().map(|w| C::expj(-w)).collect(),
            step: w.iter().map(|w| C::expj(-w * block as f64)).collect(),
            phasor: w.iter().map(|w| C::expj(-w * (block - 1) as f64)).collect(),
            block,
            filled: 0,
            ring: vec![C::default(); freqs.len() * window],
            energy: vec![0.0; window],
            sum_sq: 0.0,
            window,
            head: 0,
            blocks_seen: 0,
        }
    }

    #[allow(clippy::len_without_is_empty)] // never empty: built from a fixed tone list
    pub fn len(&self) -> usize {
        self.freqs.len()
    }

    pub fn freq(&self, k: usize) -> f64 {
        self.freqs[k]
    }

    /// Seconds per block.
    pub fn block_seconds(&self) -> f64 {
        self.block as f64 / self.fs
    }

    /// Samples in the whole window.
    pub fn window_samples(&self) -> usize {
        self.block * self.window
    }

    /// Blocks completed since the start (or the last reset).
    pub fn blocks_seen(&self) -> usize {
        self.blocks_seen
    }

    /// Feed one sample; true when it completed a block (the window moved on).
    #[inline]
    pub fn push(&mut self, x: f32) -> bool {
        for ((c, s1), s2) in self.coef.iter().zip(self.s1.iter_mut()).zip(self.s2.iter_mut()) {
            let s0 = x + c * *s1 - *s2;
            *s2 = *s1;
            *s1 = s0;
        }
        self.sum_sq += (x as f64) * (x as f64);
        self.filled += 1;
        if self.filled < self.block {
            return false;
        }
        self.finish_block();
        true
    }

    fn finish_block(&mut self) {
        self.filled = 0;
        let n = self.freqs.len();
        let base = self.head * n;
        for k in 0..n {
            let y = C::new(self.s1[k] as f64, 0.0).plus(self.back[k].times(C::new(-self.s2[k] as f64, 0.0)));
            self.ring[base + k] = self.phasor[k].times(y);
            let p = self.phasor[k].times(self.step[k]);
            // Keep the phasor on the unit circle (one block of f64 rounding at a time).
            let norm = p.norm2().sqrt();
            self.phasor[k] =
                if norm > 0.0 && norm.is_finite() { C::new(p.re / norm, p.im / norm) } else { C::new(1.0, 0.0) };
            self.s1[k] = 0.0;
            self.s2[k] = 0.0;
        }
        self.energy[self.head] = self.sum_sq / self.block as f64;
        self.sum_sq = 0.0;
        self.head = (self.head + 1) % self.window;
        self.blocks_seen += 1;
    }

    /// Block output `i` of tone `k`, `i = 0` the oldest in the window.
    pub fn block_output(&self, k: usize, i: usize) -> C {
        let slot = (self.head + i) % self.window;
        self.ring[slot * self.freqs.len() + k]
    }

    /// Mean square of the input over the window.
    pub fn mean_square(&self) -> f64 {
        self.energy.iter().sum::<f64>() / self.window as f64
    }

    /// The window of tone `k`.
    pub fn window(&self, k: usize) -> Window<'_> {
        Window { bank: self, k }
    }

    pub fn reset(&mut self) {
        let fresh = ToneBank::new(self.fs, &self.freqs.clone(), self.block, self.window);
        *self = fresh;
    }
}

/// One tone's view of the last `window` blocks.
pub struct Window<'a> {
    bank: &'a ToneBank,
    k: usize,
}

impl Window<'_> {
    fn x(&self, i: usize) -> C {
        self.bank.block_output(self.k, i)
    }

    /// Power of the plain coherent sum (the DFT of the window at the nominal frequency), as
    /// the squared peak amplitude of a sine that would give it.
    pub fn plain_power(&self) -> f64 {
        let mut s = C::default();
        for i in 0..self.bank.window {
            s = s.plus(self.x(i));
        }
        self.scale(s.norm2())
    }

    /// Phase advance per block (radians, -pi..pi), measured over the window.
    pub fn phase_step(&self) -> f64 {
        self.recent_phase_step(self.bank.window)
    }

    /// [`Window::phase_step`] over the newest `blocks` blocks only.
    pub fn recent_phase_step(&self, blocks: usize) -> f64 {
        let m = self.bank.window;
        let mut d = C::default();
        for i in m + 1 - blocks.clamp(2, m)..m {
            d = d.plus(self.x(i).times(self.x(i - 1).conj()));
        }
        d.arg()
    }

    /// [`Window::phase_step`] refined over the newest `blocks` blocks: the phase turn between
    /// the coherent sums of their two halves (each corrected by `coarse`), divided by the
    /// half length. A real sine also has a component at minus its frequency, which short
    /// blocks see through their sidelobes (a 67 Hz tone measured ±0.2 Hz off in 50 ms
    /// halves); that component is estimated from the blocks and taken out first.
    pub fn fine_phase_step(&self, coarse: f64, blocks: usize) -> f64 {
        let m = self.bank.window;
        let blocks = blocks.clamp(2, m);
        let half = blocks / 2;
        let bsz = self.bank.block;
        let wk = 2.0 * std::f64::consts::PI * self.bank.freqs[self.k] / self.bank.fs;
        let w = wk + coarse / bsz as f64;
        let first = self.bank.blocks_seen.saturating_sub(m);
        let start = |i: usize| ((first + i) * bsz) as f64;
        let range = m - 2 * half..m;
        // The tone's complex amplitude, from its own term.
        let (mut num, mut den) = (C::default(), 0.0);
        for i in range.clone() {
            let s1 = block_sum(w - wk, start(i), bsz);
            num = num.plus(self.x(i).times(s1.conj()));
            den += s1.norm2();
        }
        let c = if den > 0.0 { C::new(num.re / den, num.im / den) } else { C::default() };
        let mut h = [C::default(); 2];
        for (j, i) in range.enumerate() {
            let image = c.conj().times(block_sum(-(w + wk), start(i), bsz));
            let y = self.x(i).plus(C::new(-image.re, -image.im));
            let v = y.times(C::expj(-coarse * j as f64));
            h[j / half] = h[j / half].plus(v);
        }
        coarse + h[1].times(h[0].conj()).arg() / half as f64
    }

    /// Frequency measured over the window, Hz.
    pub fn measured_freq(&self, phase_step: f64) -> f64 {
        self.bank.freqs[self.k] + phase_step / (2.0 * std::f64::consts::PI * self.bank.block_seconds())
    }

    /// Squared peak amplitude of the window's sine at the measured frequency.
    pub fn refined_power(&self, phase_step: f64) -> f64 {
        let mut s = C::default();
        for i in 0..self.bank.window {
            s = s.plus(self.x(i).times(C::expj(-phase_step * i as f64)));
        }
        self.scale(s.norm2())
    }

    /// Squared peak amplitude of block `i` alone.
    pub fn block_power(&self, i: usize) -> f64 {
        let b = self.bank.block as f64;
        self.x(i).norm2() * 4.0 / (b * b)
    }

    /// Squared peak amplitude of blocks `i - 1` and `i` summed at the measured frequency.
    pub fn pair_power(&self, i: usize, phase_step: f64) -> f64 {
        let b = 2.0 * self.bank.block as f64;
        self.x(i - 1).plus(self.x(i).times(C::expj(-phase_step))).norm2() * 4.0 / (b * b)
    }

    /// [`Window::pair_power`] with the turn `e^{-j phase_step}` already made.
    pub fn pair_power_turned(&self, i: usize, turn: C) -> f64 {
        let b = 2.0 * self.bank.block as f64;
        self.x(i - 1).plus(self.x(i).times(turn)).norm2() * 4.0 / (b * b)
    }

    /// An upper bound of [`Window::refined_power`] at any phase step: the blocks summed by
    /// magnitude (no trigonometry).
    pub fn incoherent_power(&self) -> f64 {
        let s: f64 = (0..self.bank.window).map(|i| self.x(i).norm2().sqrt()).sum();
        self.scale(s * s)
    }

    /// Phase turn from block `i - 1` to `i` beyond `phase_step` (radians, -pi..pi).
    pub fn phase_jump(&self, i: usize, phase_step: f64) -> f64 {
        self.x(i).times(self.x(i - 1).conj()).times(C::expj(-phase_step)).arg()
    }

    fn scale(&self, norm2: f64) -> f64 {
        let l = self.bank.window_samples() as f64;
        norm2 * 4.0 / (l * l)
    }
}
