//! The virtio-mmio transport (virtio 1.x "modern" register layout, version 2) as a
//! register state machine. It knows nothing of the device behind it: a status write
//! that completes the handshake returns [`MmioAction::Activate`], a reset returns
//! [`MmioAction::Reset`], and the owner (`vhost_user_fs`) acts on them.
//!
//! Every guest-written value is checked: queue sizes must be powers of two no larger
//! than the maximum, ring addresses must lie inside guest RAM when the driver sets
//! DRIVER_OK (else the device sets DEVICE_NEEDS_RESET and stays inactive), accesses
//! to registers must be aligned 32-bit (others read as 0 and are dropped), and the
//! config space may be read at any offset and width inside it.
//!
//! The interrupt comes from the backend through an irqfd, so the transport cannot
//! know why it fired: InterruptStatus reads "used buffer" (bit 0) while the device
//! is active, which is what Linux's driver needs to scan its queues.

/// `"virt"`, little-endian.
pub const MAGIC: u32 = 0x7472_6976;
/// The modern (virtio 1.x) layout.
pub const VERSION: u32 = 2;
/// oslet's vendor id: "OSLT".
pub const VENDOR_ID: u32 = 0x544c_534f;
/// Bytes of register space one device takes.
pub const MMIO_LEN: u64 = 0x1000;
/// Offset of QueueNotify (the ioeventfd address).
pub const QUEUE_NOTIFY: u64 = 0x50;
/// Offset of the device config space.
pub const CONFIG_OFFSET: u64 = 0x100;

/// VIRTIO_F_VERSION_1.
pub const F_VERSION_1: u64 = 1 << 32;

/// Device status bits.
pub mod status {
    /// The guest noticed the device.
    pub const ACKNOWLEDGE: u32 = 1;
    /// The guest has a driver for it.
    pub const DRIVER: u32 = 2;
    /// The driver is ready: the device may run.
    pub const DRIVER_OK: u32 = 4;
    /// Feature negotiation done.
    pub const FEATURES_OK: u32 = 8;
    /// The device failed and must be reset.
    pub const DEVICE_NEEDS_RESET: u32 = 0x40;
    /// The driver gave up.
    pub const FAILED: u32 = 0x80;
}

/// One virtqueue as the driver configured it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueConfig {
    /// The largest size the device accepts.
    pub max_size: u16,
    /// The size the driver chose (0 until set).
    pub size: u16,
    /// QueueReady.
    pub ready: bool,
    /// Descriptor table GPA.
    pub desc: u64,
    /// Driver (available) ring GPA.
    pub driver: u64,
    /// Device (used) ring GPA.
    pub device: u64,
}

impl QueueConfig {
    /// The (GPA, length) of the descriptor table, available and used rings.
    pub fn areas(&self) -> [(u64, u64); 3] {
        let n = u64::from(self.size);
        [
            (self.desc, 16 * n),
            (self.driver, 6 + 2 * n),
            (self.device, 6 + 8 * n),
        ]
    }
}

/// What the owner must do after a register write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MmioAction {
    /// Nothing.
    None,
    /// The driver set DRIVER_OK with valid queues: start the device.
    Activate,
    /// The driver reset the device (status 0): stop it.
    Reset,
    /// A write the device ignores, worth a (rate-limited) warning.
    Ignored(&'static str),
}

/// The transport state of one virtio-mmio device.
#[derive(Debug)]
pub struct VirtioMmio {
    device_id: u32,
    device_features: u64,
    driver_features: u64,
    device_features_sel: u32,
    driver_features_sel: u32,
    queue_sel: u32,
    queues: Vec<QueueConfig>,
    status: u32,
    active: bool,
    config_changed: bool,
    config: Vec<u8>,
    config_generation: u32,
    ram: Vec<(u64, u64)>,
}

impl VirtioMmio {
    /// A device `device_id` offering `features` (VERSION_1 is always added), with
    /// one queue of at most `max_sizes[i]` entries per element, config space
    /// `config`, and guest RAM as (start, length) ranges.
    pub fn new(
        device_id: u32,
        features: u64,
        max_sizes: &[u16],
        config: Vec<u8>,
        ram: Vec<(u64, u64)>,
    ) -> Self {
        Self {
            device_id,
            device_features: features | F_VERSION_1,
            driver_features: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            queue_sel: 0,
            queues: max_sizes
                .iter()
                .map(|&m| QueueConfig {
                    max_size: m,
                    ..Default::default()
                })
                .collect(),
            status: 0,
            active: false,
            config_changed: false,
            config,
            config_generation: 0,
            ram,
        }
    }

    /// The queues as configured.
    pub fn queues(&self) -> &[QueueConfig] {
        &self.queues
    }

    /// The features the driver accepted.
    pub fn driver_features(&self) -> u64 {
        self.driver_features
    }

    /// The device status register.
    pub fn status(&self) -> u32 {
        self.status
    }

    /// Whether the device was activated (and not reset since).
    pub fn active(&self) -> bool {
        self.active
    }

    /// The backend failed: tell the driver the device needs a reset.
    pub fn set_needs_reset(&mut self) {
        self.status |= status::DEVICE_NEEDS_RESET;
        self.active = false;
        self.config_changed = true;
        self.config_generation = self.config_generation.wrapping_add(1);
    }

    fn reset(&mut self) {
        self.driver_features = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.queue_sel = 0;
        for q in &mut self.queues {
            *q = QueueConfig {
                max_size: q.max_size,
                ..Default::default()
            };
        }
        self.status = 0;
        self.active = false;
        self.config_changed = false;
    }

    fn in_ram(&self, gpa: u64, len: u64) -> bool {
        let Some(end) = gpa.checked_add(len) else {
            return false;
        };
        self.ram
            .iter()
            .any(|&(s, l)| gpa >= s && end <= s.saturating_add(l))
    }

    /// Whether every ready queue is usable: size a power of two within the maximum,
    /// rings aligned (16/2/4) and inside guest RAM.
    fn queues_valid(&self) -> bool {
        self.queues.iter().filter(|q| q.ready).all(|q| {
            q.size.is_power_of_two()
                && q.size <= q.max_size
                && q.desc % 16 == 0
                && q.driver % 2 == 0
                && q.device % 4 == 0
                && q.areas().iter().all(|&(a, l)| self.in_ram(a, l))
        })
    }

    fn selected(&mut self) -> Option<&mut QueueConfig> {
        self.queues.get_mut(self.queue_sel as usize)
    }

    /// A guest read of `data.len()` bytes at `offset` into the register window.
    pub fn read(&self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if offset >= CONFIG_OFFSET {
            let start = offset - CONFIG_OFFSET;
            for (i, b) in data.iter_mut().enumerate() {
                if let Some(v) = usize::try_from(start + i as u64)
                    .ok()
                    .and_then(|j| self.config.get(j))
                {
                    *b = *v;
                }
            }
            return;
        }
        if data.len() != 4 || offset % 4 != 0 {
            return;
        }
        let q = self.queues.get(self.queue_sel as usize);
        let v: u32 = match offset {
            0x00 => MAGIC,
            0x04 => VERSION,
            0x08 => self.device_id,
            0x0c => VENDOR_ID,
            0x10 => match self.device_features_sel {
                0 => self.device_features as u32,
                1 => (self.device_features >> 32) as u32,
                _ => 0,
            },
            0x34 => q.map_or(0, |q| u32::from(q.max_size)),
            0x38 => q.map_or(0, |q| u32::from(q.size)),
            0x44 => q.map_or(0, |q| u32::from(q.ready)),
            0x60 => u32::from(self.active) | (u32::from(self.config_changed) << 1),
            0x70 => self.status,
            0x80 => q.map_or(0, |q| q.desc as u32),
            0x84 => q.map_or(0, |q| (q.desc >> 32) as u32),
            0x90 => q.map_or(0, |q| q.driver as u32),
            0x94 => q.map_or(0, |q| (q.driver >> 32) as u32),
            0xa0 => q.map_or(0, |q| q.device as u32),
            0xa4 => q.map_or(0, |q| (q.device >> 32) as u32),
            // No shared memory regions: SHMLen reads as all ones.
            0xb0 | 0xb4 | 0xb8 | 0xbc => u32::MAX,
            0xfc => self.config_generation,
            _ => 0,
        };
        data.copy_from_slice(&v.to_le_bytes());
    }

    /// A guest write of `data` at `offset` into the register window.
    pub fn write(&mut self, offset: u64, data: &[u8]) -> MmioAction {
        if offset >= CONFIG_OFFSET {
            return MmioAction::Ignored("write to the read-only virtio-fs config space");
        }
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            return MmioAction::Ignored("virtio-mmio register write that is not 32-bit");
        };
        if offset % 4 != 0 {
            return MmioAction::Ignored("unaligned virtio-mmio register write");
        }
        let v = u32::from_le_bytes(bytes);
        let configuring = self.status & status::DRIVER_OK == 0
            && self.status & status::FAILED == 0
            && !self.active;
        let set_lo = |x: &mut u64| *x = (*x & !0xffff_ffff) | u64::from(v);
        let set_hi = |x: &mut u64| *x = (*x & 0xffff_ffff) | (u64::from(v) << 32);
        match offset {
            0x14 => self.device_features_sel = v,
            0x20 => {
                if self.status & status::FEATURES_OK != 0 {
                    return MmioAction::Ignored("driver features written after FEATURES_OK");
                }
                match self.driver_features_sel {
                    0 => set_lo(&mut self.driver_features),
                    1 => set_hi(&mut self.driver_features),
                    _ => {}
                }
            }
            0x24 => self.driver_features_sel = v,
            0x30 => self.queue_sel = v,
            0x38 | 0x44 | 0x80 | 0x84 | 0x90 | 0x94 | 0xa0 | 0xa4 => {
                if !configuring {
                    return MmioAction::Ignored("queue register written while the device runs");
                }
                let Some(q) = self.selected() else {
                    return MmioAction::Ignored("queue register of a queue that does not exist");
                };
                match offset {
                    0x38 => {
                        if v == 0 || v > u32::from(q.max_size) || !v.is_power_of_two() {
                            return MmioAction::Ignored(
                                "queue size not a power of two within QueueNumMax",
                            );
                        }
                        q.size = v as u16;
                    }
                    0x44 => q.ready = v == 1,
                    0x80 => set_lo(&mut q.desc),
                    0x84 => set_hi(&mut q.desc),
                    0x90 => set_lo(&mut q.driver),
                    0x94 => set_hi(&mut q.driver),
                    0xa0 => set_lo(&mut q.device),
                    _ => set_hi(&mut q.device),
                }
            }
            // Notifications normally go to the ioeventfd; one that reaches us (a queue
            // index with no ioeventfd) is dropped.
            0x50 => return MmioAction::Ignored("notify of a queue that does not exist"),
            0x64 => {
                if v & 2 != 0 {
                    self.config_changed = false;
                }
            }
            0x70 => return self.write_status(v),
            _ => {
                return MmioAction::Ignored("write to a read-only or unknown virtio-mmio register")
            }
        }
        MmioAction::None
    }

    fn write_status(&mut self, v: u32) -> MmioAction {
        if v == 0 {
            let was = self.active;
            self.reset();
            return if was {
                MmioAction::Reset
            } else {
                MmioAction::None
            };
        }
        // Bits are only ever added, never taken back (except by a reset).
        if v & self.status != self.status {
            return MmioAction::Ignored("status write clearing bits without a reset");
        }
        let new = v & !self.status;
        if new & status::FEATURES_OK != 0 {
            let ok = self.driver_features & !self.device_features == 0
                && self.driver_features & F_VERSION_1 != 0;
            if !ok {
                // The driver reads FEATURES_OK back and sees it refused.
                self.status = v & !status::FEATURES_OK & !status::DRIVER_OK;
                return MmioAction::Ignored("driver features not offered or without VERSION_1");
            }
        }
        self.status = v & !status::DEVICE_NEEDS_RESET;
        if new & status::DRIVER_OK != 0 {
            if v & status::FEATURES_OK == 0
                || !self.queues_valid()
                || !self.queues.iter().any(|q| q.ready)
            {
                self.status |= status::DEVICE_NEEDS_RESET;
                return MmioAction::Ignored("DRIVER_OK without FEATURES_OK or with invalid queues");
            }
            self.active = true;
            return MmioAction::Activate;
        }
        MmioAction::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RAM: u64 = 16 << 20;

    fn dev() -> VirtioMmio {
        VirtioMmio::new(
            26,
            0,
            &[128, 128],
            vec![b'o', b'k', 0, 0, 1, 0, 0, 0],
            vec![(0, RAM)],
        )
    }
    fn rd(d: &VirtioMmio, off: u64) -> u32 {
        let mut b = [0u8; 4];
        d.read(off, &mut b);
        u32::from_le_bytes(b)
    }
    fn wr(d: &mut VirtioMmio, off: u64, v: u32) -> MmioAction {
        d.write(off, &v.to_le_bytes())
    }
    fn setup_queue(d: &mut VirtioMmio, i: u32, base: u64) {
        wr(d, 0x30, i);
        assert_eq!(wr(d, 0x38, 64), MmioAction::None);
        wr(d, 0x80, base as u32);
        wr(d, 0x84, (base >> 32) as u32);
        wr(d, 0x90, (base + 0x1000) as u32);
        wr(d, 0xa0, (base + 0x2000) as u32);
        wr(d, 0x44, 1);
    }
    fn handshake(d: &mut VirtioMmio) -> MmioAction {
        wr(d, 0x70, status::ACKNOWLEDGE);
        wr(d, 0x70, status::ACKNOWLEDGE | status::DRIVER);
        wr(d, 0x24, 1);
        wr(d, 0x20, 1);
        let s = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK;
        wr(d, 0x70, s);
        assert_eq!(rd(d, 0x70) & status::FEATURES_OK, status::FEATURES_OK);
        setup_queue(d, 1, 0x10_0000);
        wr(d, 0x70, s | status::DRIVER_OK)
    }

    #[test]
    fn identity_registers_read_as_the_spec_says() {
        let d = dev();
        assert_eq!(rd(&d, 0), MAGIC);
        assert_eq!(rd(&d, 4), 2);
        assert_eq!(rd(&d, 8), 26);
        assert_eq!(rd(&d, 0x34), 128);
        assert_eq!(rd(&d, 0x14), 0);
        let mut d = d;
        wr(&mut d, 0x14, 1);
        assert_eq!(rd(&d, 0x10), 1, "VERSION_1 is bit 32");
    }

    #[test]
    fn config_space_reads_at_any_offset_and_width_and_past_its_end_as_zero() {
        let d = dev();
        let mut b = [0u8; 2];
        d.read(0x101, &mut b);
        assert_eq!(b, [b'k', 0]);
        let mut b = [0xaau8; 4];
        d.read(0x104, &mut b);
        assert_eq!(u32::from_le_bytes(b), 1);
        d.read(0x200, &mut b);
        assert_eq!(b, [0; 4]);
        d.read(u64::MAX - 1, &mut b);
        assert_eq!(b, [0; 4]);
    }

    #[test]
    fn a_full_handshake_activates_and_status_zero_resets_everything() {
        let mut d = dev();
        assert_eq!(handshake(&mut d), MmioAction::Activate);
        assert!(d.active());
        assert_eq!(rd(&d, 0x60), 1);
        assert_eq!(d.queues()[1].size, 64);
        assert_eq!(
            wr(&mut d, 0x38, 32),
            MmioAction::Ignored("queue register written while the device runs")
        );
        assert_eq!(wr(&mut d, 0x70, 0), MmioAction::Reset);
        assert!(!d.active());
        assert_eq!(rd(&d, 0x70), 0);
        assert_eq!(
            d.queues()[1],
            QueueConfig {
                max_size: 128,
                ..Default::default()
            }
        );
        assert_eq!(d.driver_features(), 0);
    }

    #[test]
    fn bad_queue_sizes_and_rings_outside_ram_are_refused() {
        let mut d = dev();
        wr(&mut d, 0x30, 1);
        assert!(matches!(wr(&mut d, 0x38, 48), MmioAction::Ignored(_)));
        assert!(matches!(wr(&mut d, 0x38, 256), MmioAction::Ignored(_)));
        assert!(matches!(wr(&mut d, 0x38, 0), MmioAction::Ignored(_)));
        wr(&mut d, 0x30, 7);
        assert!(matches!(wr(&mut d, 0x38, 8), MmioAction::Ignored(_)));
        assert_eq!(rd(&d, 0x34), 0, "a queue that does not exist has max 0");

        let mut d = dev();
        wr(&mut d, 0x70, 3);
        wr(&mut d, 0x24, 1);
        wr(&mut d, 0x20, 1);
        wr(&mut d, 0x70, 0xb);
        setup_queue(&mut d, 1, RAM - 0x1000);
        assert!(matches!(wr(&mut d, 0x70, 0xf), MmioAction::Ignored(_)));
        assert!(!d.active());
        assert_ne!(d.status() & status::DEVICE_NEEDS_RESET, 0);
    }

    #[test]
    fn features_without_version_1_or_not_offered_fail_features_ok() {
        let mut d = dev();
        wr(&mut d, 0x70, 3);
        wr(&mut d, 0x70, 0xb);
        assert_eq!(rd(&d, 0x70) & status::FEATURES_OK, 0);
        let mut d = dev();
        wr(&mut d, 0x70, 3);
        wr(&mut d, 0x24, 1);
        wr(&mut d, 0x20, 1 | 2);
        wr(&mut d, 0x70, 0xb);
        assert_eq!(rd(&d, 0x70) & status::FEATURES_OK, 0);
    }

    #[test]
    fn odd_widths_and_offsets_are_harmless() {
        let mut d = dev();
        assert!(matches!(d.write(0x70, &[1]), MmioAction::Ignored(_)));
        assert!(matches!(
            d.write(0x72, &[1, 0, 0, 0]),
            MmioAction::Ignored(_)
        ));
        assert!(matches!(
            d.write(0x100, &[1, 0, 0, 0]),
            MmioAction::Ignored(_)
        ));
        assert!(matches!(
            d.write(0x00, &[1, 0, 0, 0]),
            MmioAction::Ignored(_)
        ));
        let mut b = [0xffu8; 8];
        d.read(0x00, &mut b);
        assert_eq!(b, [0; 8]);
        assert_eq!(d.status(), 0);
    }

    #[test]
    fn needs_reset_deactivates_until_the_driver_resets() {
        let mut d = dev();
        assert_eq!(handshake(&mut d), MmioAction::Activate);
        d.set_needs_reset();
        assert!(!d.active());
        assert_ne!(rd(&d, 0x70) & status::DEVICE_NEEDS_RESET, 0);
        assert_eq!(rd(&d, 0xfc), 1);
        assert_eq!(rd(&d, 0x60), 2, "a config change interrupt");
        wr(&mut d, 0x64, 2);
        assert_eq!(rd(&d, 0x60), 0);
        assert_eq!(wr(&mut d, 0x70, 0), MmioAction::None);
        assert_eq!(handshake(&mut d), MmioAction::Activate);
    }
}
