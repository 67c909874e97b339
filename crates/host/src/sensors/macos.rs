//! macOS: power and battery from IOKit's power sources (`starship-battery`), idle time from
//! IOKit's `HIDIdleTime` (readable by a daemon outside the owner's session), the machine's CPU
//! times from the Mach host statistics, and memory, each process's CPU time and the running
//! programs from the process table ([`super::table`]). Nothing is spawned: the readings cost a
//! few system calls each.

use std::ffi::{c_char, c_void};

use super::foreign::{self, BatteryStatus, HidIdle};
use super::{CpuReading, IdleReading, Paths, PowerReading};

pub const IS_SUPPORTED: bool = true;

/// What macOS keeps between readings: the process table.
pub use super::table::Table as Source;
pub use super::table::{memory, processes_cpu, processes_from, running_apps};

pub fn power(_: &Paths, _: &Source) -> PowerReading {
    const FROM: &str = "iokit:power sources";
    let manager = match starship_battery::Manager::new() {
        Ok(m) => m,
        Err(e) => return PowerReading::unknown(format!("{FROM}: {e}")),
    };
    let batteries = match manager.batteries() {
        Ok(b) => b,
        Err(e) => return PowerReading::unknown(format!("{FROM}: {e}")),
    };
    let mut statuses = Vec::new();
    for battery in batteries {
        match battery {
            Ok(b) => statuses.push(BatteryStatus {
                discharging: b.state() == starship_battery::State::Discharging,
                fraction: b.state_of_charge().value,
            }),
            Err(e) => return PowerReading::unknown(format!("{FROM}: {e}")),
        }
    }
    foreign::power_from_batteries(&statuses, FROM)
}

pub fn idle(_: &Paths, _: &Source) -> IdleReading {
    foreign::idle_from_hid(hid_idle_time())
}

pub fn cpu_times(_: &Paths, _: &Source) -> CpuReading {
    let mut info = libc::host_cpu_load_info {
        cpu_ticks: [0; libc::CPU_STATE_MAX as usize],
    };
    let mut count = libc::HOST_CPU_LOAD_INFO_COUNT;
    // SAFETY: `info` is the structure HOST_CPU_LOAD_INFO fills, `count` its size in integers;
    // both outlive the call. mach_host_self has no preconditions (the port is cached by libc).
    #[allow(deprecated)] // libc points at the mach2 crate for these; the calls are the same.
    let rc = unsafe {
        libc::host_statistics(
            libc::mach_host_self(),
            libc::HOST_CPU_LOAD_INFO,
            (&mut info as *mut libc::host_cpu_load_info).cast(),
            &mut count,
        )
    };
    if rc != libc::KERN_SUCCESS {
        return CpuReading::unknown(format!("host_statistics(HOST_CPU_LOAD_INFO) failed: {rc}"));
    }
    CpuReading {
        times: Some(foreign::cpu_times_from_host_ticks(info.cpu_ticks)),
        from: "host_statistics:HOST_CPU_LOAD_INFO".into(),
    }
}

// IOKit and CoreFoundation, the few calls that read one registry property.
type CFTypeRef = *const c_void;
type IoObject = u32;

#[link(name = "IOKit", kind = "framework")]
unsafe extern "C" {
    fn IOServiceMatching(name: *const c_char) -> CFTypeRef;
    fn IOServiceGetMatchingService(main_port: u32, matching: CFTypeRef) -> IoObject;
    fn IORegistryEntryCreateCFProperty(
        entry: IoObject,
        key: CFTypeRef,
        allocator: CFTypeRef,
        options: u32,
    ) -> CFTypeRef;
    fn IOObjectRelease(object: IoObject) -> i32;
}

#[link(name = "CoreFoundation", kind = "framework")]
unsafe extern "C" {
    fn CFStringCreateWithCString(alloc: CFTypeRef, s: *const c_char, encoding: u32) -> CFTypeRef;
    fn CFGetTypeID(cf: CFTypeRef) -> usize;
    fn CFNumberGetTypeID() -> usize;
    fn CFDataGetTypeID() -> usize;
    fn CFNumberGetValue(number: CFTypeRef, kind: isize, value: *mut c_void) -> u8;
    fn CFDataGetLength(data: CFTypeRef) -> isize;
    fn CFDataGetBytePtr(data: CFTypeRef) -> *const u8;
    fn CFRelease(cf: CFTypeRef);
}

const K_CF_STRING_ENCODING_UTF8: u32 = 0x0800_0100;
const K_CF_NUMBER_SINT64_TYPE: isize = 4;
/// `kIOMainPortDefault`: the default main port is the null port.
const K_IO_MAIN_PORT_DEFAULT: u32 = 0;

/// `HIDIdleTime` of the `IOHIDSystem` service, as the registry holds it.
fn hid_idle_time() -> HidIdle {
    // SAFETY: every pointer passed is either a valid C string or an object returned by the
    // previous call and checked for null; each object created here is released once.
    unsafe {
        let matching = IOServiceMatching(c"IOHIDSystem".as_ptr());
        if matching.is_null() {
            return HidIdle::Missing("IOServiceMatching(IOHIDSystem) failed");
        }
        // Takes ownership of `matching`.
        let service = IOServiceGetMatchingService(K_IO_MAIN_PORT_DEFAULT, matching);
        if service == 0 {
            return HidIdle::Missing("no IOHIDSystem service");
        }
        let key = CFStringCreateWithCString(
            std::ptr::null(),
            c"HIDIdleTime".as_ptr(),
            K_CF_STRING_ENCODING_UTF8,
        );
        let value = if key.is_null() {
            std::ptr::null()
        } else {
            IORegistryEntryCreateCFProperty(service, key, std::ptr::null(), 0)
        };
        if !key.is_null() {
            CFRelease(key);
        }
        IOObjectRelease(service);
        if value.is_null() {
            return HidIdle::Missing("IOHIDSystem has no HIDIdleTime");
        }
        let kind = CFGetTypeID(value);
        let read = if kind == CFNumberGetTypeID() {
            let mut ns: i64 = 0;
            if CFNumberGetValue(value, K_CF_NUMBER_SINT64_TYPE, (&mut ns as *mut i64).cast()) != 0 {
                HidIdle::Number(ns)
            } else {
                HidIdle::Missing("HIDIdleTime is not a 64-bit number")
            }
        } else if kind == CFDataGetTypeID() {
            let len = usize::try_from(CFDataGetLength(value)).unwrap_or(0);
            let ptr = CFDataGetBytePtr(value);
            let bytes = if ptr.is_null() || len == 0 {
                Vec::new()
            } else {
                std::slice::from_raw_parts(ptr, len).to_vec()
            };
            HidIdle::Data(bytes)
        } else {
            HidIdle::Missing("HIDIdleTime has an unexpected type")
        };
        CFRelease(value);
        read
    }
}
