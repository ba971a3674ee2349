//! Subscriber authentication with 3GPP Milenage (TS 35.206), through the `milenage`
//! crate: RES = f2, CK = f3, IK = f4, from K, OPc and a 128-bit RAND. Checked against
//! the conformance test sets of TS 35.208 in the tests below.

use subtle::ConstantTimeEq;

use crate::hlr::model::Secret128;

/// What the controller keeps from one challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthVector {
    /// Expected response (f2), 64 bits.
    pub xres: [u8; 8],
    /// Cipher key (f3).
    pub ck: [u8; 16],
    /// Integrity key (f4).
    pub ik: [u8; 16],
}

/// Computes the authentication vector for `rand`.
pub fn milenage(k: &Secret128, opc: &Secret128, rand: &[u8; 16]) -> AuthVector {
    let mut m = ::milenage::Milenage::new_with_opc(*k.expose(), *opc.expose());
    let (xres, ck, ik, _ak) = m.f2345(rand);
    AuthVector { xres, ck, ik }
}

/// The RES a unit holding `k` and `opc` sends back for `rand` (the simulator's side).
pub fn unit_response(k: &Secret128, opc: &Secret128, rand: &[u8; 16]) -> [u8; 8] {
    milenage(k, opc, rand).xres
}

/// Whether `res` equals `xres`, compared in constant time.
pub fn response_ok(res: &[u8; 8], xres: &[u8; 8]) -> bool {
    res.ct_eq(xres).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// OPc from OP (TS 35.206 §4.1: OPc = OP ⊕ E_K(OP)), for operators who hold OP.
    fn opc_from_op(k: &Secret128, op: &[u8; 16]) -> Option<Secret128> {
        let m = ::milenage::Milenage::new_with_op(*k.expose(), *op).ok()?;
        Some(Secret128::from_bytes(*m.opc()))
    }

    fn h16(s: &str) -> [u8; 16] {
        hex::decode(s).unwrap().try_into().unwrap()
    }

    /// 3GPP TS 35.208 §4.3, test sets 1 to 6: K, RAND, OP, OPc, f2 RES, f3 CK, f4 IK.
    const SETS: [[&str; 7]; 6] = [
        [
            "465b5ce8b199b49faa5f0a2ee238a6bc",
            "23553cbe9637a89d218ae64dae47bf35",
            "cdc202d5123e20f62b6d676ac72cb318",
            "cd63cb71954a9f4e48a5994e37a02baf",
            "a54211d5e3ba50bf",
            "b40ba9a3c58b2a05bbf0d987b21bf8cb",
            "f769bcd751044604127672711c6d3441",
        ],
        [
            "0396eb317b6d1c36f19c1c84cd6ffd16",
            "c00d603103dcee52c4478119494202e8",
            "ff53bade17df5d4e793073ce9d7579fa",
            "53c15671c60a4b731c55b4a441c0bde2",
            "d3a628ed988620f0",
            "58c433ff7a7082acd424220f2b67c556",
            "21a8c1f929702adb3e738488b9f5c5da",
        ],
        [
            "fec86ba6eb707ed08905757b1bb44b8f",
            "9f7c8d021accf4db213ccff0c7f71a6a",
            "dbc59adcb6f9a0ef735477b7fadf8374",
            "1006020f0a478bf6b699f15c062e42b3",
            "8011c48c0c214ed2",
            "5dbdbb2954e8f3cde665b046179a5098",
            "59a92d3b476a0443487055cf88b2307b",
        ],
        [
            "9e5944aea94b81165c82fbf9f32db751",
            "ce83dbc54ac0274a157c17f80d017bd6",
            "223014c5806694c007ca1eeef57f004f",
            "a64a507ae1a2a98bb88eb4210135dc87",
            "f365cd683cd92e96",
            "e203edb3971574f5a94b0d61b816345d",
            "0c4524adeac041c4dd830d20854fc46b",
        ],
        [
            "4ab1deb05ca6ceb051fc98e77d026a84",
            "74b0cd6031a1c8339b2b6ce2b8c4a186",
            "2d16c5cd1fdf6b22383584e3bef2a8d8",
            "dcf07cbd51855290b92a07a9891e523e",
            "5860fc1bce351e7e",
            "7657766b373d1c2138f307e3de9242f9",
            "1c42e960d89b8fa99f2744e0708ccb53",
        ],
        [
            "6c38a116ac280c454f59332ee35c8c4f",
            "ee6466bc96202c5a557abbeff8babf63",
            "1ba00a1a7c6700ac8c3ff3e96ad08725",
            "3803ef5363b947c6aaa225e58fae3934",
            "16c8233f05a0ac28",
            "3f8c7587fe8e4b233af676aede30ba3b",
            "a7466cc1e6b2a1337d49d3b66e95d7b4",
        ],
    ];

    #[test]
    fn ts_35_208_test_sets() {
        for (i, [k, rand, op, opc, res, ck, ik]) in SETS.iter().enumerate() {
            let k = Secret128::from_bytes(h16(k));
            let opc_derived = opc_from_op(&k, &h16(op)).unwrap();
            assert_eq!(opc_derived.to_hex(), *opc, "set {}: OPc", i + 1);
            let v = milenage(&k, &opc_derived, &h16(rand));
            assert_eq!(hex::encode(v.xres), *res, "set {}: RES", i + 1);
            assert_eq!(hex::encode(v.ck), *ck, "set {}: CK", i + 1);
            assert_eq!(hex::encode(v.ik), *ik, "set {}: IK", i + 1);
        }
    }

    #[test]
    fn response_check() {
        assert!(response_ok(&[1; 8], &[1; 8]));
        assert!(!response_ok(&[1; 8], &[1, 1, 1, 1, 1, 1, 1, 2]));
    }
}
