// Does memory freed on thread B, in pages owned by thread A's heap, leave the resident
// set while A is blocked (as a parked tokio worker is)? And after A collects?
use std::sync::mpsc;
use std::time::Duration;

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .unwrap()
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    kib / 1024.0
}

struct Ptr(*mut u8);
unsafe impl Send for Ptr {}

fn main() {
    let block: usize = std::env::args().nth(1).map(|a| a.parse().unwrap()).unwrap_or(1024);
    let total: usize = 64 << 20;
    unsafe { libmimalloc_sys::mi_option_set(15, 1) }; // purge delay 1 ms, as rt::purge
    println!("block {block} B; start {:.1} MiB", rss_mib());
    let (to_b, from_a) = mpsc::channel::<Vec<Ptr>>();
    let (collect_a, a_collects) = mpsc::channel::<()>();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let a = std::thread::spawn(move || {
        let blocks: Vec<Ptr> = (0..total / block)
            .map(|_| unsafe {
                let p = libmimalloc_sys::mi_malloc(block).cast::<u8>();
                std::ptr::write_bytes(p, 1, block);
                Ptr(p)
            })
            .collect();
        unsafe { libmimalloc_sys::mi_collect(false) };
        to_b.send(blocks).unwrap();
        // "parked" until told to collect
        a_collects.recv().unwrap();
        unsafe { libmimalloc_sys::mi_collect(false) };
        done_tx.send(()).unwrap();
        // stay alive
        a_collects.recv().ok();
    });
    let blocks = from_a.recv().unwrap();
    println!("allocated on A: {:.1} MiB", rss_mib());
    let b = std::thread::spawn(move || {
        // B's own heap in use, as a worker's is.
        let own = unsafe { libmimalloc_sys::mi_malloc(100) };
        for p in blocks {
            unsafe { libmimalloc_sys::mi_free(p.0.cast()) };
        }
        unsafe { libmimalloc_sys::mi_collect(false) };
        let right_after = rss_mib();
        std::thread::sleep(Duration::from_millis(200));
        let later = rss_mib();
        unsafe { libmimalloc_sys::mi_collect(false) };
        let collected_later = rss_mib();
        unsafe { libmimalloc_sys::mi_free(own) };
        (right_after, later, collected_later)
    });
    let (right_after, later, collected_later) = b.join().unwrap();
    println!("freed on B, B collected at once: {right_after:.1} MiB; 200 ms later, idle: {later:.1}; B collects again: {collected_later:.1}");
    if std::env::args().nth(2).as_deref() == Some("force") {
        std::thread::spawn(|| unsafe { libmimalloc_sys::mi_collect(true) }).join().unwrap();
        std::thread::sleep(Duration::from_millis(200));
        println!("a third thread, mi_collect(true): {:.1} MiB", rss_mib());
    }
    if std::env::args().nth(2).as_deref() == Some("main-force") {
        unsafe { libmimalloc_sys::mi_collect(true) };
        std::thread::sleep(Duration::from_millis(200));
        println!("main thread, mi_collect(true): {:.1} MiB", rss_mib());
    }
    if std::env::args().nth(2).as_deref() == Some("main-normal") {
        unsafe { libmimalloc_sys::mi_collect(false) };
        std::thread::sleep(Duration::from_millis(200));
        println!("main thread, mi_collect(false): {:.1} MiB", rss_mib());
    }
    if std::env::args().nth(2).as_deref() == Some("normal") {
        std::thread::spawn(|| unsafe { libmimalloc_sys::mi_collect(false) }).join().unwrap();
        std::thread::sleep(Duration::from_millis(200));
        println!("a third thread, mi_collect(false): {:.1} MiB", rss_mib());
    }
    collect_a.send(()).unwrap();
    done_rx.recv().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    println!("A collected: {:.1} MiB", rss_mib());
    drop(collect_a);
    a.join().unwrap();
}
